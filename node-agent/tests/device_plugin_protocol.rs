//! The plugin's gRPC server against clients the kubelet is not: real Unix sockets, a real
//! plugin (the library's `device_plugin::run`), and a hand-written HTTP/2 client.
//! - A grpcio-style client, whose `:authority` is the socket path (grpcio's default for a
//!   `unix:` target; h2 alone resets such streams), calls every RPC. Like a real client it
//!   puts `:authority` in its HPACK dynamic table and refers to it in later requests.
//! - A seeded stream of malformed frames and requests (bad frame lengths, truncated
//!   messages, bad compression flags, garbage protobuf, garbage HPACK) never stops the
//!   plugin, and a ListAndWatch stream opened before keeps working.

mod device_plugin_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use device_plugin_support::*;
use dpdk_node_agent::device_plugin::api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateRequest,
    ContainerPreferredAllocationRequest, DevicePluginOptions, Empty, ListAndWatchResponse,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse,
};
use dpdk_node_agent::device_plugin::hpack::Decoder;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const BDF: &str = "0000:00:06.0";
const BDF2: &str = "0000:00:07.0";
const T: Duration = Duration::from_secs(10);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A length-prefixed gRPC message (compression flag 0).
fn grpc_message(body: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// The string literal of an HPACK field (no Huffman).
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 127, "short strings only");
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// What one RPC got back.
#[derive(Debug, Default)]
struct Answer {
    headers: BTreeMap<String, String>,
    messages: Vec<Vec<u8>>,
    reset: Option<u32>,
}

impl Answer {
    fn grpc_status(&self) -> Option<&str> {
        self.headers.get("grpc-status").map(String::as_str)
    }
}

/// A grpcio-style HTTP/2 client on a Unix socket.
struct RawClient {
    conn: UnixStream,
    socket_path: String,
    next_stream: u32,
    /// The server's HPACK state (its responses use its dynamic table).
    decoder: Decoder,
    answers: BTreeMap<u32, Answer>,
    buffered: Vec<u8>,
}

impl RawClient {
    async fn connect(path: &Path) -> Self {
        let mut conn = UnixStream::connect(path).await.expect("connect");
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        conn.write_all(&hello).await.expect("preface");
        Self {
            conn,
            socket_path: path.display().to_string(),
            next_stream: 1,
            decoder: Decoder::default(),
            answers: BTreeMap::new(),
            buffered: Vec::new(),
        }
    }

    /// The request's header block as grpcio writes it: `:authority` = the socket path,
    /// added to the dynamic table on the first request and referred to by index after.
    fn header_block(&self, path: &str) -> Vec<u8> {
        let mut b = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
        b.push(0x04); // :path, literal without indexing, static name 4
        hpack_string(&mut b, path.as_bytes());
        if self.next_stream == 1 {
            b.push(0x41); // :authority, incremental indexing, static name 1
            hpack_string(&mut b, self.socket_path.as_bytes());
        } else {
            // Dynamic index 62 is the :authority added first (each later request adds none).
            b.push(0xbe);
        }
        for (name, value) in [("content-type", "application/grpc"), ("te", "trailers")] {
            b.push(0x00);
            hpack_string(&mut b, name.as_bytes());
            hpack_string(&mut b, value.as_bytes());
        }
        b
    }

    /// Sends one request (headers, one DATA frame with `payload`, END_STREAM); its stream id.
    async fn send(&mut self, path: &str, payload: &[u8]) -> u32 {
        let id = self.next_stream;
        let mut out = frame(HEADERS, END_HEADERS, id, &self.header_block(path));
        out.extend(frame(DATA, END_STREAM, id, payload));
        self.next_stream += 2;
        self.conn.write_all(&out).await.expect("send");
        id
    }

    /// Reads frames until `done(answer)` for `id`.
    async fn wait(&mut self, id: u32, done: impl Fn(&Answer) -> bool) -> &Answer {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            if self.answers.get(&id).is_some_and(&done) {
                return &self.answers[&id];
            }
            while let Some((kind, flags, stream, payload)) = self.take_frame() {
                self.handle(kind, flags, stream, payload).await;
            }
            if self.answers.get(&id).is_some_and(&done) {
                return &self.answers[&id];
            }
            let mut buf = [0u8; 16384];
            let n = tokio::time::timeout_at(deadline, self.conn.read(&mut buf))
                .await
                .expect("an answer in time")
                .expect("read");
            assert!(
                n > 0,
                "the plugin closed the connection: {:?}",
                self.answers.get(&id)
            );
            self.buffered.extend_from_slice(&buf[..n]);
        }
    }

    fn take_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        if self.buffered.len() < 9 {
            return None;
        }
        let b = &self.buffered;
        let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
        if b.len() < 9 + len {
            return None;
        }
        let (kind, flags) = (b[3], b[4]);
        let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff;
        let payload = b[9..9 + len].to_vec();
        self.buffered.drain(..9 + len);
        Some((kind, flags, stream, payload))
    }

    async fn handle(&mut self, kind: u8, flags: u8, stream: u32, payload: Vec<u8>) {
        match kind {
            SETTINGS if flags & 0x1 == 0 => {
                self.conn
                    .write_all(&frame(SETTINGS, 0x1, 0, &[]))
                    .await
                    .expect("settings ack");
            }
            HEADERS => {
                assert!(flags & END_HEADERS != 0, "the plugin sends whole blocks");
                let fields = self
                    .decoder
                    .decode(&payload, 1 << 20)
                    .expect("server HPACK");
                let a = self.answers.entry(stream).or_default();
                for (n, v) in fields {
                    a.headers.insert(
                        String::from_utf8_lossy(&n).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            DATA => {
                let a = self.answers.entry(stream).or_default();
                // One gRPC message per DATA frame is all these small answers need.
                let mut rest = &payload[..];
                while rest.len() >= 5 {
                    let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
                    a.messages.push(rest[5..5 + len].to_vec());
                    rest = &rest[5 + len..];
                }
            }
            RST_STREAM => {
                let code = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
                self.answers.entry(stream).or_default().reset = Some(code);
            }
            GOAWAY => panic!("the plugin sent GOAWAY: {payload:?}"),
            _ => {}
        }
    }

    /// A unary call: the decoded response, or panic naming what came back instead.
    async fn unary<Resp: Message + Default>(&mut self, method: &str, req: &impl Message) -> Resp {
        let id = self
            .send(
                &format!("/v1beta1.DevicePlugin/{method}"),
                &grpc_message(&req.encode_to_vec()),
            )
            .await;
        let a = self
            .wait(id, |a| a.reset.is_some() || a.grpc_status().is_some())
            .await;
        assert_eq!(a.reset, None, "{method}: stream reset");
        assert_eq!(a.grpc_status(), Some("0"), "{method}: {a:?}");
        Resp::decode(a.messages.first().expect("one message").as_slice()).expect("decodes")
    }
}

async fn serving_plugin(host: &FakeHost) -> (Plugin, TestKubelet) {
    host.add_device(BDF, Some(0), Group::Iommu(36));
    host.add_device(BDF2, Some(0), Group::Iommu(37));
    host.bind_vfio(BDF);
    host.bind_vfio(BDF2);
    let kubelet = TestKubelet::start(&host.plugin_dir);
    let plugin = Plugin::start(host.config(), desired(SEED_RESOURCE, &[BDF, BDF2]));
    kubelet
        .next_registration(T)
        .await
        .dial_back
        .expect("serving");
    (plugin, kubelet)
}

#[tokio::test]
async fn a_client_whose_authority_is_the_socket_path_can_call_every_rpc() {
    let host = FakeHost::new();
    let (plugin, _kubelet) = serving_plugin(&host).await;
    let mut c = RawClient::connect(&host.plugin_dir.join(SEED_SOCKET)).await;

    let options: DevicePluginOptions = c.unary("GetDevicePluginOptions", &Empty {}).await;
    assert!(options.get_preferred_allocation_available);

    let watch = c
        .send("/v1beta1.DevicePlugin/ListAndWatch", &grpc_message(&[]))
        .await;
    let a = c
        .wait(watch, |a| !a.messages.is_empty() || a.reset.is_some())
        .await;
    assert_eq!(a.reset, None);
    let list = ListAndWatchResponse::decode(a.messages[0].as_slice()).expect("list");
    let mut ids: Vec<&str> = list.devices.iter().map(|d| d.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec![BDF, BDF2]);

    let preferred: PreferredAllocationResponse = c
        .unary(
            "GetPreferredAllocation",
            &PreferredAllocationRequest {
                container_requests: vec![ContainerPreferredAllocationRequest {
                    available_device_i_ds: vec![BDF.into(), BDF2.into()],
                    must_include_device_i_ds: vec![BDF2.into()],
                    allocation_size: 1,
                }],
            },
        )
        .await;
    assert_eq!(preferred.container_responses[0].device_i_ds, vec![BDF2]);

    let allocated: AllocateResponse = c
        .unary(
            "Allocate",
            &AllocateRequest {
                container_requests: vec![ContainerAllocateRequest {
                    devices_ids: vec![BDF.into()],
                }],
            },
        )
        .await;
    let envs = &allocated.container_responses[0].envs;
    assert_eq!(
        envs.get("PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2")
            .map(String::as_str),
        Some(BDF)
    );

    let _: PreStartContainerResponse = c
        .unary(
            "PreStartContainer",
            &PreStartContainerRequest {
                devices_ids: vec![BDF.into()],
            },
        )
        .await;
    assert_eq!(c.answers[&watch].reset, None, "the watch is still open");
    plugin.shutdown().await;
}

/// A small seeded generator (xorshift64*), so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One hostile connection's bytes, after the preface: (frames, bytes).
fn hostile(rng: &mut Rng, socket_path: &str) -> (usize, Vec<u8>) {
    let allocate = AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: vec![BDF.into()],
        }],
    }
    .encode_to_vec();
    let mut headers = vec![0x83, 0x86, 0x04];
    hpack_string(&mut headers, b"/v1beta1.DevicePlugin/Allocate");
    headers.push(0x01);
    hpack_string(&mut headers, socket_path.as_bytes());
    let request = |body: &[u8]| {
        let mut f = frame(HEADERS, END_HEADERS, 1, &headers);
        f.extend(frame(DATA, END_STREAM, 1, body));
        f
    };
    let mut out = frame(SETTINGS, 0, 0, &[]);
    let case = rng.below(9);
    let frames = match case {
        // A frame whose length is larger than what follows; then the connection closes.
        0 => {
            let mut f = frame(DATA, 0, 1, &rng.bytes(20));
            f[0..3].copy_from_slice(&[0, 0x40, 0]);
            out.extend(f);
            2
        }
        // A frame larger than SETTINGS_MAX_FRAME_SIZE.
        1 => {
            out.extend(frame(rng.below(10) as u8, 0, 1, &rng.bytes(20_000)));
            2
        }
        // A gRPC message whose length prefix claims more than the stream carries.
        2 => {
            let mut m = grpc_message(&allocate);
            m[1..5].copy_from_slice(&(1_000_000u32).to_be_bytes());
            out.extend(request(&m));
            3
        }
        // A message cut short inside its 5-byte prefix.
        3 => {
            out.extend(request(&grpc_message(&allocate)[..3]));
            3
        }
        // A compression flag that is not 0 (no grpc-encoding was sent).
        4 => {
            let mut m = grpc_message(&allocate);
            m[0] = 1 + rng.below(255) as u8;
            out.extend(request(&m));
            3
        }
        // Garbage protobuf.
        5 => {
            let n = 1 + rng.below(200) as usize;
            out.extend(request(&grpc_message(&rng.bytes(n))));
            3
        }
        // Garbage HPACK.
        6 => {
            let n = 1 + rng.below(100) as usize;
            out.extend(frame(HEADERS, END_HEADERS, 1, &rng.bytes(n)));
            2
        }
        // A HEADERS block left open, then another stream's DATA.
        7 => {
            out.extend(frame(HEADERS, 0, 1, &headers));
            out.extend(frame(DATA, END_STREAM, 3, &grpc_message(&allocate)));
            3
        }
        // Random frames.
        _ => {
            let n = 1 + rng.below(8) as usize;
            for _ in 0..n {
                let len = rng.below(64) as usize;
                let kind = rng.below(12) as u8;
                let flags = rng.next() as u8;
                let stream = rng.below(8) as u32;
                out.extend(frame(kind, flags, stream, &rng.bytes(len)));
            }
            n + 1
        }
    };
    (frames, out)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Seeded, bounded: 400 hostile connections. Each is written, then read until the plugin
/// answers or closes it (at most 2 s).
#[tokio::test]
async fn malformed_frames_never_stop_the_plugin_or_an_open_list_and_watch() {
    const SEED: u64 = 0x5eed_d9dc_0001;
    const CONNECTIONS: usize = 400;
    let host = FakeHost::new();
    let (plugin, kubelet) = serving_plugin(&host).await;
    let socket = host.plugin_dir.join(SEED_SOCKET);
    let mut client = kubelet.plugin(SEED_SOCKET).await;
    let mut watch = list_and_watch(&mut client).await;
    assert_eq!(next_list(&mut watch, T).await.len(), 2);

    let rss_before = rss_kib();
    let started = Instant::now();
    let mut rng = Rng(SEED);
    let mut frames = 0;
    for _ in 0..CONNECTIONS {
        let (n, bytes) = hostile(&mut rng, &socket.display().to_string());
        frames += n;
        let mut conn = UnixStream::connect(&socket).await.expect("connect");
        let mut all = PREFACE.to_vec();
        all.extend(bytes);
        // The plugin may close the connection before it has read everything.
        let _ = conn.write_all(&all).await;
        let _ = conn.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut sink)).await;
    }
    let elapsed = started.elapsed();
    let rss_after = rss_kib();
    println!(
        "fuzz: seed {SEED:#x}, {CONNECTIONS} connections, {frames} frames in {elapsed:?}; RSS {rss_before} KiB before, {rss_after} KiB after"
    );

    // The stream opened before is alive and still follows the devices.
    assert_still_open(&mut watch, Duration::from_millis(300)).await;
    host.set_driver(BDF2, Some("ena"));
    wait_list(&mut watch, T, |d| health_of(d, BDF2) == Some("Unhealthy")).await;
    // New clients are served, the kubelet's and the grpcio-style one.
    let allocated = client
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![BDF.into()],
            }],
        })
        .await
        .expect("Allocate after the fuzzing")
        .into_inner();
    assert_eq!(allocated.container_responses.len(), 1);
    let mut raw = RawClient::connect(&socket).await;
    let options: DevicePluginOptions = raw.unary("GetDevicePluginOptions", &Empty {}).await;
    assert!(options.get_preferred_allocation_available);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    plugin.shutdown().await;
}
