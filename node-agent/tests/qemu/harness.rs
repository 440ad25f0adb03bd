//! Boots a Debian kernel in QEMU (TCG) with two emulated NICs and runs the statically
//! linked agent inside (see `init.sh`). Shared by the real-kernel test and the benchmark.
//!
//! - The agent is built with `+crt-static` for x86_64-unknown-linux-gnu, in its own target
//!   directory (`<target>/qemu-static`) so the nested cargo never waits for the lock of
//!   the cargo that runs the tests.
//! - `build-guest.sh` downloads the kernel package once (cached under
//!   `~/.cache/dpdk-gitops/qemu/`) and packs the initramfs (busybox-static, the modules,
//!   the agent, `init.sh`).
//! - QEMU always runs under `timeout`, and the harness kills it too if it overstays.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";

/// Whether QEMU can run here.
pub enum QemuStatus {
    Ready,
    /// The binary is missing: a setup error (.ci/apt-packages.txt installs it).
    Missing(String),
    /// It is installed but cannot start a machine on this host.
    CannotStart(String),
}

/// Starts a q35 TCG machine with no kernel, paused, and quits it through QMP.
pub fn qemu_status() -> QemuStatus {
    let mut child = match Command::new("timeout")
        .args(["--kill-after=5", "30", QEMU])
        .args([
            "-machine",
            "q35,accel=tcg",
            "-m",
            "64",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-S",
            "-qmp",
            "stdio",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return QemuStatus::Missing(format!("cannot run `timeout {QEMU}`: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n");
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => QemuStatus::Ready,
        Ok(out) if out.status.code() == Some(127) => QemuStatus::Missing(format!(
            "{QEMU} is not installed (apt-get install qemu-system-x86)"
        )),
        Ok(out) => QemuStatus::CannotStart(format!(
            "{QEMU} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )),
        Err(e) => QemuStatus::CannotStart(e.to_string()),
    }
}

/// The absolute path of a program on PATH (QEMU's guestfwd runs it through /bin/sh).
fn which(program: &str) -> String {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| program.to_string())
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the statically linked agent and returns its path.
pub fn build_static_agent() -> PathBuf {
    cargo_static(&["--bin", "dpdk-node-agent"]);
    static_artifact("dpdk-node-agent")
}

/// Builds the statically linked agent and the guest kubelet (`examples/guest_kubelet.rs`)
/// in one cargo run; returns their paths.
pub fn build_static_agent_and_kubelet() -> (PathBuf, PathBuf) {
    cargo_static(&["--bin", "dpdk-node-agent", "--example", "guest_kubelet"]);
    (
        static_artifact("dpdk-node-agent"),
        static_artifact("examples/guest_kubelet"),
    )
}

fn static_dir() -> PathBuf {
    target_dir().join("qemu-static")
}

fn static_artifact(name: &str) -> PathBuf {
    static_dir()
        .join("x86_64-unknown-linux-gnu/debug")
        .join(name)
}

/// `cargo build <targets>` with `+crt-static` in `<target>/qemu-static`.
fn cargo_static(targets: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    let out = Command::new(cargo)
        .args(["build", "-p", "dpdk-node-agent"])
        .args(targets)
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // No debuginfo: faster to build, and the binary must fit the guest's RAM-backed rootfs.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_TARGET_DIR", static_dir())
        .current_dir(manifest_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building {targets:?} statically failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "static {targets:?} built in {:.1}s in {}",
        started.elapsed().as_secs_f64(),
        static_dir().display()
    );
}

/// The kernel and initramfs of a guest.
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub release: String,
}

/// Packs the guest (downloads the kernel on first use).
pub fn build_guest(agent: &Path, out: &Path) -> Guest {
    build_guest_with(agent, None, out)
}

/// Packs the guest; with `kubelet` it is a DPDK node (the kubelet, testpmd, the noiommu
/// vfio.ko: see `build-guest.sh`). Progress goes to stderr.
pub fn build_guest_with(agent: &Path, kubelet: Option<&Path>, out: &Path) -> Guest {
    let script = manifest_dir().join("tests/qemu/build-guest.sh");
    let init = manifest_dir().join("tests/qemu/init.sh");
    let started = Instant::now();
    let o = Command::new("bash")
        .arg(&script)
        .arg(agent)
        .arg(&init)
        .arg(out)
        .args(kubelet)
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    eprintln!(
        "guest packed in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    assert!(
        o.status.success(),
        "{} failed (its stderr is above):\n{}",
        script.display(),
        String::from_utf8_lossy(&o.stdout)
    );
    Guest {
        kernel: out.join("vmlinuz"),
        initrd: out.join("initrd.img"),
        release: String::from_utf8_lossy(&o.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string(),
    }
}

/// What a boot printed.
pub struct Boot {
    pub console: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Boot {
    /// `(name, passed, detail)` for every `DPDKTEST <name> PASS|FAIL <detail>` line.
    pub fn checks(&self) -> Vec<(String, bool, String)> {
        self.console
            .lines()
            .filter_map(|l| {
                let rest = l.trim_end_matches('\r').split_once("DPDKTEST ")?.1;
                let mut parts = rest.splitn(3, ' ');
                let name = parts.next()?.to_string();
                let verdict = parts.next()?;
                let detail = parts.next().unwrap_or("").to_string();
                match verdict {
                    "PASS" => Some((name, true, detail)),
                    "FAIL" => Some((name, false, detail)),
                    _ => None,
                }
            })
            .collect()
    }

    /// The `key=value` pairs of the `DPDKTEST TIME` line.
    pub fn times(&self) -> Vec<(String, u64)> {
        self.console
            .lines()
            .filter_map(|l| {
                l.split_once("DPDKTEST TIME ")
                    .map(|(_, r)| r.trim().to_string())
            })
            .flat_map(|r| {
                r.split_whitespace()
                    .filter_map(|kv| {
                        kv.split_once('=')
                            .and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn done(&self) -> bool {
        self.console.contains("DPDKTEST DONE")
    }
}

/// Boots the guest in `mode` (`iommu`, `noiommu`, `bench`); `iommu` adds an emulated
/// Intel VT-d and `intel_iommu=on`.
pub fn boot(guest: &Guest, mode: &str, iommu: bool, limit: Duration) -> Boot {
    boot_with(
        guest,
        &BootSpec {
            mode: mode.to_string(),
            iommu,
            limit,
            ..BootSpec::default()
        },
    )
}

/// The MACs of the guest's NICs: 00:03.0 e1000e, 00:04.0 virtio (primary), 00:05.0 virtio (peer).
pub const NIC_MAC: &str = "52:54:00:12:34:01";
pub const PRIMARY_MAC: &str = "52:54:00:12:34:02";
pub const PEER_MAC: &str = "52:54:00:12:34:03";

/// How to boot a guest.
#[derive(Default)]
pub struct BootSpec {
    /// `dpdktest=<mode>` on the kernel command line (init.sh's modes).
    pub mode: String,
    /// An emulated Intel VT-d and `intel_iommu=on`.
    pub iommu: bool,
    pub limit: Duration,
    /// Files added to the initramfs as a second archive: (absolute guest path, content).
    pub files: Vec<(String, Vec<u8>)>,
    /// QEMU `guestfwd` rules on the primary NIC's network: a guest connection to
    /// `10.0.2.x:port` is relayed to this host port on 127.0.0.1 (`busybox nc`, one per
    /// connection). (guest address `10.0.2.x:port`, host port)
    pub forwards: Vec<(String, u16)>,
    /// Put the e1000e on a QEMU hub with a third NIC (virtio-net at 00:05.0, [`PEER_MAC`])
    /// that stays on its kernel driver, instead of on its own user network.
    pub peer: bool,
    /// Guest RAM in MiB (default 512).
    pub memory_mb: u32,
    /// The CPU model (`-cpu`; default QEMU's qemu64). Debian's DPDK is built for Nehalem
    /// (SSE4.2, POPCNT) and dies with SIGILL on qemu64.
    pub cpu: Option<&'static str>,
}

/// Appends an uncompressed newc archive of `files` to `base` (the kernel unpacks
/// concatenated archives in order; the later one adds files).
fn initrd_with_files(base: &Path, files: &[(String, Vec<u8>)], out: &Path) -> PathBuf {
    let dir = out.join("root");
    let _ = std::fs::remove_dir_all(&dir);
    for (path, content) in files {
        let p = dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write guest file");
    }
    let cpio = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . | busybox cpio -o -H newc 2>/dev/null")
        .arg("sh")
        .arg(&dir)
        .output()
        .expect("sh runs");
    assert!(
        cpio.status.success() && !cpio.stdout.is_empty(),
        "busybox cpio failed"
    );
    let mut bytes = std::fs::read(base).expect("read initrd");
    // Each archive starts 4-byte aligned; the kernel skips the zero padding.
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    bytes.extend_from_slice(&cpio.stdout);
    let initrd = out.join("initrd-with-files.img");
    std::fs::write(&initrd, bytes).expect("write initrd");
    initrd
}

/// Boots the guest as `spec` says.
pub fn boot_with(guest: &Guest, spec: &BootSpec) -> Boot {
    let mode = &spec.mode;
    // no_timer_check: TCG on a loaded host is slow enough to fail the boot-time timer check.
    let mut cmdline = format!("console=ttyS0 quiet panic=-1 no_timer_check dpdktest={mode}");
    let mut machine = vec!["-machine", "q35,accel=tcg"];
    if let Some(cpu) = spec.cpu {
        machine.extend(["-cpu", cpu]);
    }
    if spec.iommu {
        // No interrupt remapping: under TCG on a busy host the IO-APIC timer check through
        // remapped interrupts can fail and panic the guest; DMA remapping is what vfio needs.
        cmdline.push_str(" intel_iommu=on");
        machine.extend(["-device", "intel-iommu,intremap=off"]);
    }
    let initrd = if spec.files.is_empty() {
        guest.initrd.clone()
    } else {
        let dir = guest
            .initrd
            .parent()
            .map(|p| p.join(format!("boot-{mode}")))
            .expect("initrd dir");
        std::fs::create_dir_all(&dir).expect("mkdir");
        initrd_with_files(&guest.initrd, &spec.files, &dir)
    };
    // The primary's user network, with the guestfwd relays.
    let busybox = which("busybox");
    let mut primary_net = "user,id=n2,restrict=on".to_string();
    for (guest_addr, host_port) in &spec.forwards {
        primary_net.push_str(&format!(
            ",guestfwd=tcp:{guest_addr}-cmd:{busybox} nc 127.0.0.1 {host_port}"
        ));
    }
    // Three emulated NICs at fixed slots: 00:03.0 e1000e (to bind), 00:04.0 virtio
    // (primary), and with `peer` 00:05.0 virtio on the e1000e's hub.
    let mut nics: Vec<String> = Vec::new();
    if spec.peer {
        nics.extend([
            "-netdev".into(),
            "hubport,id=n1,hubid=0".into(),
            "-netdev".into(),
            "hubport,id=n3,hubid=0".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=n3,mac={PEER_MAC},addr=0x5,romfile="),
        ]);
    } else {
        nics.extend(["-netdev".into(), "user,id=n1,restrict=on,ipv6=off".into()]);
    }
    nics.extend([
        "-device".into(),
        format!("e1000e,netdev=n1,mac={NIC_MAC},addr=0x3,romfile="),
        "-netdev".into(),
        primary_net,
        "-device".into(),
        format!("virtio-net-pci,netdev=n2,mac={PRIMARY_MAC},addr=0x4,romfile="),
    ]);
    let memory = if spec.memory_mb == 0 {
        512
    } else {
        spec.memory_mb
    }
    .to_string();
    let limit = spec.limit;
    let secs = limit.as_secs().max(10).to_string();
    let started = Instant::now();
    let mut child = Command::new("timeout")
        .args(["--kill-after=5", &secs, QEMU])
        .args(&machine)
        .args([
            "-m",
            &memory,
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &cmdline])
        .args(&nics)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("timeout + qemu start");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    // `timeout` ends QEMU; this is the belt to its braces.
    let deadline = started + limit + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let mut console = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    if !stderr.is_empty() {
        console.push_str("\n--- qemu stderr ---\n");
        console.push_str(&stderr);
    }
    // timeout(1) exits 124 when it had to stop QEMU.
    let timed_out = status.is_none_or(|s| s.code() == Some(124) || s.code() == Some(137));
    Boot {
        console,
        elapsed,
        timed_out,
    }
}
