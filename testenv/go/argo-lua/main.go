// argo-lua runs one Argo CD resource health script with gopher-lua, the interpreter Argo CD
// uses, the way Argo CD's controller calls it (util/lua/lua.go in argo-cd, runLua and
// ExecuteHealthLua): a fresh state with only the package, base and table libraries (a script
// in argocd-cm runs without `useOpenLibs`, so string and math are not there; Argo's "safe"
// os subset is left out too), a one-second timeout, the object converted to a Lua table as
// the global `obj` (maps become tables, arrays tables with 1-based indices, JSON null nil),
// and the script's return value read as a {status, message} table.
//
// Input (stdin): {"script": "<lua>", "obj": {<object as JSON>}}.
// Output (stdout): {"status": "...", "message": "..."} and exit 0; an invalid status comes out
// as Argo makes it, Unknown with "Lua returned an invalid health status". When the script
// raises or returns no table, {"error": "..."} and exit 1: Argo shows a health error then.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type request struct {
	Script string         `json:"script"`
	Obj    map[string]any `json:"obj"`
}

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Argo CD's health status codes; anything else is not a valid health.
var validStatus = map[string]bool{
	"Unknown": true, "Progressing": true, "Healthy": true,
	"Suspended": true, "Degraded": true, "Missing": true,
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fail(fmt.Errorf("reading the request: %w", err))
	}
	h, err := run(req.Script, req.Obj)
	if err != nil {
		fail(err)
	}
	out, _ := json.Marshal(h)
	fmt.Println(string(out))
}

func fail(err error) {
	out, _ := json.Marshal(map[string]string{"error": err.Error()})
	fmt.Println(string(out))
	os.Exit(1)
}

// run evaluates the script as Argo CD does.
func run(script string, obj map[string]any) (health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return health{}, err
		}
	}
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return health{}, err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return health{}, errors.New("the health script did not return a table")
	}
	h := health{}
	switch s := ret.RawGetString("status").(type) {
	case lua.LString:
		h.Status = string(s)
	case *lua.LNilType:
	default:
		return health{}, fmt.Errorf("the health script returned a %s status, not a string", s.Type())
	}
	switch m := ret.RawGetString("message").(type) {
	case lua.LString:
		h.Message = string(m)
	case *lua.LNilType:
	default:
		return health{}, fmt.Errorf("the health script returned a %s message, not a string", m.Type())
	}
	if !validStatus[h.Status] {
		return health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

// toLua converts decoded JSON to Lua values like Argo CD's decodeValue (unknown types → nil).
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := l.NewTable()
		for _, e := range v {
			t.Append(toLua(l, e))
		}
		return t
	case map[string]any:
		t := l.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	default:
		return lua.LNil
	}
}
