// Tools module: argo-lua, Argo CD's Lua health-script evaluation (gopher-lua) for the tests.
module github.com/dpdk-gitops/testenv/argo-lua

go 1.26.0

require github.com/yuin/gopher-lua v1.1.2
