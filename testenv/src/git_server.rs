//! Real Git servers on loopback for the Git source's tests, demo and benchmarks:
//!
//! - [`WorkRepo`]: a repository driven with the `git` CLI (commit files, symlinks, removals);
//! - [`HttpsGitServer`]: `git http-backend` (CGI) behind a small HTTPS server with a
//!   generated CA, basic or bearer auth, and a request counter;
//! - [`SshGitServer`]: a real `sshd` (openssh-server) on a free loopback port with a
//!   generated host key, a deploy key and its known_hosts line.
//!
//! Every server stops when dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::{Error, Result, io_err};

fn run_git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "dpdk-testenv")
        .env("GIT_AUTHOR_EMAIL", "testenv@example.com")
        .env("GIT_COMMITTER_NAME", "dpdk-testenv")
        .env("GIT_COMMITTER_EMAIL", "testenv@example.com")
        .output()
        .map_err(|e| Error::Other(format!("running git {args:?}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A Git repository with a work tree, on branch `main`.
pub struct WorkRepo {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl WorkRepo {
    /// Creates an empty repository in a new temporary directory.
    pub fn new() -> Result<WorkRepo> {
        let tmp = tempfile::tempdir().map_err(io_err("tempdir"))?;
        let dir = tmp.path().join("repo");
        let mut r = WorkRepo::init(&dir)?;
        r._tmp = Some(tmp);
        Ok(r)
    }

    /// Creates an empty repository at `dir`.
    pub fn init(dir: &Path) -> Result<WorkRepo> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        run_git(dir, &["init", "-q", "-b", "main"])?;
        // Let servers hand out any reachable commit (for pinned-commit sources).
        run_git(
            dir,
            &["config", "uploadpack.allowReachableSHA1InWant", "true"],
        )?;
        run_git(dir, &["config", "http.receivepack", "false"])?;
        Ok(WorkRepo {
            dir: dir.to_path_buf(),
            _tmp: None,
        })
    }

    /// Writes (or overwrites) a file.
    pub fn write(&self, rel: &str, text: &str) -> Result<()> {
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        // Replace a symlink instead of writing through it.
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, text).map_err(io_err(&p))
    }

    /// Creates a symlink `rel` → `target`.
    pub fn symlink(&self, rel: &str, target: &str) -> Result<()> {
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p).map_err(io_err(&p))
    }

    /// Removes a file or directory.
    pub fn remove(&self, rel: &str) -> Result<()> {
        let p = self.dir.join(rel);
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p).map_err(io_err(&p))
        } else {
            std::fs::remove_file(&p).map_err(io_err(&p))
        }
    }

    /// Commits everything in the work tree; returns the new commit's SHA.
    pub fn commit(&self, message: &str) -> Result<String> {
        run_git(&self.dir, &["add", "-A"])?;
        run_git(&self.dir, &["commit", "-q", "--allow-empty", "-m", message])?;
        self.head()
    }

    /// Tags HEAD.
    pub fn tag(&self, name: &str) -> Result<()> {
        run_git(&self.dir, &["tag", "-f", name]).map(|_| ())
    }

    pub fn head(&self) -> Result<String> {
        run_git(&self.dir, &["rev-parse", "HEAD"])
    }

    /// `file://` URL of the repository.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Runs git in the repository.
    pub fn git(&self, args: &[&str]) -> Result<String> {
        run_git(&self.dir, args)
    }
}

/// A CA and a serving certificate for 127.0.0.1 and localhost.
pub struct TestCa {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// PEM of the intermediate CA between the root and the serving certificate, when
    /// generated with [`TestCa::generate_with_intermediate`] (empty otherwise).
    pub intermediate_pem: String,
}

impl TestCa {
    /// Root CA → intermediate CA → serving certificate (as most real CAs issue).
    pub fn generate_with_intermediate() -> Result<TestCa> {
        let root_key = KeyPair::generate()?;
        let mut root = ca_params("dpdk-testenv git root CA")?;
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root_cert = root.self_signed(&root_key)?;
        let root_issuer = Issuer::new(root, root_key);
        let mid_key = KeyPair::generate()?;
        let mut mid = ca_params("dpdk-testenv git intermediate CA")?;
        mid.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let mid_cert = mid.signed_by(&mid_key, &root_issuer)?;
        let mid_issuer = Issuer::new(mid, mid_key);
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &mid_issuer)?;
        Ok(TestCa {
            ca_pem: root_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            intermediate_pem: mid_cert.pem(),
        })
    }

    pub fn generate() -> Result<TestCa> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "dpdk-testenv git CA");
        ca_params.distinguished_name = dn;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer)?;
        Ok(TestCa {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            intermediate_pem: String::new(),
        })
    }
}

fn ca_params(cn: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    Ok(p)
}

/// How an [`HttpsGitServer`] behaves beyond serving Git.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Certificate signed by an intermediate CA; the server sends leaf + intermediate.
    pub intermediate: bool,
    /// Send every authorized response (the ref advertisement, the negotiation, the pack)
    /// one byte per this interval: a server that trickles.
    pub trickle: Option<Duration>,
}

/// How the HTTPS server authenticates clients.
#[derive(Clone, Debug)]
pub enum HttpAuth {
    Basic { username: String, password: String },
    Bearer(String),
}

/// `git http-backend` behind HTTPS on 127.0.0.1.
pub struct HttpsGitServer {
    pub port: u16,
    /// PEM of the CA that signed the server certificate (for the client's `ca.crt`); with
    /// an intermediate, the root.
    pub ca_pem: String,
    /// PEM of the intermediate CA (empty without [`ServerOptions::intermediate`]).
    pub intermediate_pem: String,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsGitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpsGitServer {
    /// Serves every repository under `project_root` (URL path = path below it).
    /// Call from inside a tokio runtime.
    pub async fn start(project_root: &Path, auth: HttpAuth) -> Result<HttpsGitServer> {
        HttpsGitServer::start_with(project_root, auth, ServerOptions::default()).await
    }

    /// Like [`HttpsGitServer::start`], with [`ServerOptions`].
    pub async fn start_with(
        project_root: &Path,
        auth: HttpAuth,
        opts: ServerOptions,
    ) -> Result<HttpsGitServer> {
        let ca = if opts.intermediate {
            TestCa::generate_with_intermediate()?
        } else {
            TestCa::generate()?
        };
        let mut certs: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls_pemfile_certs(&ca.cert_pem)?;
        if opts.intermediate {
            certs.extend(rustls_pemfile_certs(&ca.intermediate_pem)?);
        }
        let key = rustls::pki_types::PrivateKeyDer::try_from(
            pem_body(&ca.key_pem).ok_or_else(|| Error::Other("bad key PEM".into()))?,
        )
        .map_err(|e| Error::Other(format!("key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Other(format!("tls: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::Other(format!("tls: {e}")))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_err("127.0.0.1:0"))?;
        let port = listener.local_addr().map_err(io_err("local_addr"))?.port();
        let requests = Arc::new(AtomicU64::new(0));
        let root = project_root.to_path_buf();
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let root = root.clone();
                let auth = auth.clone();
                let counter = counter.clone();
                let trickle = opts.trickle;
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve_connection(tls, &root, &auth, &counter, trickle).await;
                    }
                });
            }
        });
        Ok(HttpsGitServer {
            port,
            ca_pem: ca.ca_pem,
            intermediate_pem: ca.intermediate_pem,
            requests,
            task,
        })
    }

    /// URL of the repository at `path` below the project root.
    pub fn url(&self, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Authenticated requests that reached git http-backend so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn rustls_pemfile_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let der = pem_body(pem).ok_or_else(|| Error::Other("bad cert PEM".into()))?;
    Ok(vec![rustls::pki_types::CertificateDer::from(der)])
}

async fn serve_connection<S>(
    stream: S,
    root: &Path,
    auth: &HttpAuth,
    counter: &AtomicU64,
    trickle: Option<Duration>,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    loop {
        // Request line and headers.
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let mut headers: HashMap<String, String> = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let mut body = Vec::new();
        if headers
            .get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).await?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                if n == 0 {
                    let mut end = String::new();
                    r.read_line(&mut end).await?;
                    break;
                }
                let mut chunk = vec![0u8; n];
                r.read_exact(&mut chunk).await?;
                body.extend_from_slice(&chunk);
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf).await?;
            }
        } else if let Some(n) = headers
            .get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            body = vec![0u8; n];
            r.read_exact(&mut body).await?;
        }

        let authorized = match (auth, headers.get("authorization")) {
            (HttpAuth::Basic { username, password }, Some(v)) => v
                .strip_prefix("Basic ")
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .is_some_and(|d| d == format!("{username}:{password}").as_bytes()),
            (HttpAuth::Bearer(token), Some(v)) => {
                v.strip_prefix("Bearer ").is_some_and(|t| t.trim() == token)
            }
            _ => false,
        };
        if !authorized {
            let msg = b"authentication required\n";
            let challenge = match auth {
                HttpAuth::Basic { .. } => "WWW-Authenticate: Basic realm=\"git\"\r\n",
                HttpAuth::Bearer(_) => "WWW-Authenticate: Bearer\r\n",
            };
            w.write_all(
                format!(
                    "HTTP/1.1 401 Unauthorized\r\n{challenge}Content-Length: {}\r\n\r\n",
                    msg.len()
                )
                .as_bytes(),
            )
            .await?;
            w.write_all(msg).await?;
            w.flush().await?;
            continue;
        }
        counter.fetch_add(1, Ordering::SeqCst);
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let user = match auth {
            HttpAuth::Basic { username, .. } => username.clone(),
            HttpAuth::Bearer(_) => "bearer".into(),
        };
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env(
                "CONTENT_TYPE",
                headers.get("content-type").cloned().unwrap_or_default(),
            )
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("REMOTE_USER", user)
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(p) = headers.get("git-protocol") {
            cmd.env("GIT_PROTOCOL", p);
        }
        if let Some(enc) = headers.get("content-encoding") {
            cmd.env("HTTP_CONTENT_ENCODING", enc);
        }
        let mut child = cmd.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&body).await?;
        }
        let out = child.wait_with_output().await?;
        let raw = out.stdout;
        let split = find_header_end(&raw);
        let (head, payload) = match split {
            Some((h, b)) => (&raw[..h], &raw[b..]),
            None => (&raw[..0], &raw[..]),
        };
        let mut status = "200 OK".to_string();
        let mut resp_headers = String::new();
        for l in String::from_utf8_lossy(head).lines() {
            if let Some(s) = l.strip_prefix("Status:") {
                status = s.trim().to_string();
            } else if !l.trim().is_empty() {
                resp_headers.push_str(l.trim_end());
                resp_headers.push_str("\r\n");
            }
        }
        let mut response = format!(
            "HTTP/1.1 {status}\r\n{resp_headers}Content-Length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        response.extend_from_slice(payload);
        let fast = if trickle.is_some() { 0 } else { response.len() };
        w.write_all(&response[..fast]).await?;
        match trickle {
            None => {}
            Some(every) => {
                for &b in &response[fast..] {
                    w.write_all(&[b]).await?;
                    w.flush().await?;
                    tokio::time::sleep(every).await;
                }
            }
        }
        w.flush().await?;
    }
}

fn find_header_end(raw: &[u8]) -> Option<(usize, usize)> {
    for i in 0..raw.len() {
        if raw[i..].starts_with(b"\r\n\r\n") {
            return Some((i, i + 4));
        }
        if raw[i..].starts_with(b"\n\n") {
            return Some((i, i + 2));
        }
    }
    None
}

/// A real sshd on 127.0.0.1 that serves repositories by absolute path to one deploy key.
pub struct SshGitServer {
    pub port: u16,
    /// The deploy key (OpenSSH private key) for the client's `identity`.
    pub client_key: String,
    /// `[127.0.0.1]:<port> ssh-ed25519 AAAA...` for the client's `known_hosts`.
    pub known_hosts: String,
    /// The login user (the user running the tests).
    pub user: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for SshGitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Path of sshd (Debian's openssh-server).
pub const SSHD: &str = "/usr/sbin/sshd";

fn keygen(path: &Path) -> Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "dpdk-testenv", "-f"])
        .arg(path)
        .output()
        .map_err(|e| Error::Other(format!("ssh-keygen: {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "ssh-keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

impl SshGitServer {
    /// Starts sshd with a private config on a free port and waits until it accepts.
    pub fn start() -> Result<SshGitServer> {
        if !Path::new(SSHD).exists() {
            return Err(Error::Other(format!(
                "{SSHD} not found: install openssh-server (listed in .ci/apt-packages.txt)"
            )));
        }
        let dir = tempfile::tempdir().map_err(io_err("tempdir"))?;
        let d = dir.path();
        keygen(&d.join("host_key"))?;
        keygen(&d.join("client_key"))?;
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).map_err(io_err(d))?;
        let user = Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .map_err(|e| Error::Other(format!("id -un: {e}")))?;
        // sshd's privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("127.0.0.1:0"))?;
            l.local_addr().map_err(io_err("local_addr"))?.port()
        };
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nAllowUsers {user}\nPidFile {pid}\nLogLevel VERBOSE\n",
            hk = d.join("host_key").display(),
            ak = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
        );
        let cfg = d.join("sshd_config");
        std::fs::write(&cfg, config).map_err(io_err(&cfg))?;
        let log = d.join("sshd.log");
        let log_file = std::fs::File::create(&log).map_err(io_err(&log))?;
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| Error::Other(format!("starting sshd: {e}")))?;
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).map_err(io_err(d))?;
        let mut fields = host_pub.split_whitespace();
        let known_hosts = format!(
            "[127.0.0.1]:{port} {} {}\n",
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default()
        );
        let client_key = std::fs::read_to_string(d.join("client_key")).map_err(io_err(d))?;
        let mut server = SshGitServer {
            port,
            client_key,
            known_hosts,
            user,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(Error::Exited {
                    what: "sshd".into(),
                    status: status.to_string(),
                    log: log.display().to_string(),
                    tail: crate::tail_file(&log, 20),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: "sshd".into(),
                    secs: 10,
                    log: log.display().to_string(),
                    tail: crate::tail_file(&log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ssh://` URL of a repository at an absolute path.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }
}
