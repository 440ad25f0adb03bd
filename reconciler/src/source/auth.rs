//! Credentials from the source's Secret, and the two server-identity checks: SSH host keys
//! against the REQUIRED `known_hosts` (no trust on first use), and HTTPS certificates
//! against an optional private CA (`ca.crt`).

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// The Secret keys a DPDKConfigSource reads.
pub mod keys {
    pub const USERNAME: &str = "username";
    pub const PASSWORD: &str = "password";
    pub const BEARER_TOKEN: &str = "bearerToken";
    pub const IDENTITY: &str = "identity";
    pub const KNOWN_HOSTS: &str = "known_hosts";
    pub const WEBHOOK_SECRET: &str = "webhookSecret";
    /// PEM CA bundle that signs the HTTPS server's certificate (Flux's key name).
    pub const CA_CRT: &str = "ca.crt";
}

/// What the Secret provides. Debug output redacts every secret value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
    /// OpenSSH or PEM private key.
    pub identity: Option<String>,
    pub known_hosts: Option<String>,
    pub webhook_secret: Option<Vec<u8>>,
    pub ca_crt: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |b: bool| if b { "<set>" } else { "<unset>" };
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &set(self.password.is_some()))
            .field("bearer_token", &set(self.bearer_token.is_some()))
            .field("identity", &set(self.identity.is_some()))
            .field("known_hosts", &set(self.known_hosts.is_some()))
            .field("webhook_secret", &set(self.webhook_secret.is_some()))
            .field("ca_crt", &set(self.ca_crt.is_some()))
            .finish()
    }
}

impl Credentials {
    /// What a Secret named by `spec.secretRef` provides: the one reading of a Secret, for
    /// the fetch, `dpdk-reconciler diff` and the webhook receiver alike.
    pub fn from_secret(secret: &Secret) -> Credentials {
        let data: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        Credentials::from_secret_data(&data)
    }

    /// Reads the known keys of a Secret's data.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Credentials {
        let text = |k: &str| {
            data.get(k).map(|v| {
                String::from_utf8_lossy(v)
                    .trim_end_matches(['\n', '\r'])
                    .to_string()
            })
        };
        Credentials {
            username: text(keys::USERNAME),
            password: text(keys::PASSWORD),
            bearer_token: text(keys::BEARER_TOKEN),
            identity: data
                .get(keys::IDENTITY)
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            known_hosts: data
                .get(keys::KNOWN_HOSTS)
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            webhook_secret: data.get(keys::WEBHOOK_SECRET).map(|v| {
                // A trailing newline from `echo` is not part of the secret.
                let mut v = v.clone();
                while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    v.pop();
                }
                v
            }),
            ca_crt: data.get(keys::CA_CRT).cloned(),
        }
    }
}

/// One usable line of a known_hosts file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KnownHost {
    revoked: bool,
    patterns: Vec<String>,
    key_type: String,
    key: Vec<u8>,
}

fn parse_known_hosts(text: &str) -> Vec<KnownHost> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or("");
        let mut revoked = false;
        if first.starts_with('@') {
            if first == "@revoked" {
                revoked = true;
            } else {
                // @cert-authority: host certificates are not supported; the line is ignored.
                continue;
            }
            first = fields.next().unwrap_or("");
        }
        let (Some(key_type), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(key) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        out.push(KnownHost {
            revoked,
            patterns: first.split(',').map(str::to_string).collect(),
            key_type: key_type.to_string(),
            key,
        });
    }
    out
}

/// `host` for port 22, `[host]:port` otherwise: how OpenSSH names hosts in known_hosts.
pub fn known_hosts_name(host: &str, port: Option<u16>) -> String {
    match port {
        None | Some(22) => host.to_string(),
        Some(p) => format!("[{host}]:{p}"),
    }
}

fn glob(pattern: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => rec(&p[1..], n) || (!n.is_empty() && rec(p, &n[1..])),
            (Some(b'?'), Some(_)) => rec(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => rec(&p[1..], &n[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), name.as_bytes())
}

fn hashed_match(pattern: &str, name: &str) -> bool {
    // |1|base64(salt)|base64(HMAC-SHA1(salt, name))
    let mut parts = pattern.split('|');
    let (Some(""), Some("1"), Some(salt), Some(hash)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

fn host_matches(patterns: &[String], name: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg, name) {
                return false;
            }
        } else if p.starts_with("|1|") {
            matched |= hashed_match(p, name);
        } else {
            matched |= glob(p, name);
        }
    }
    matched
}

/// Checks the SSH host key the server presented (`key`: the SSH wire-format public key
/// blob, as in known_hosts) for `name` (see [`known_hosts_name`]). An unknown host or key
/// is an error: there is no trust on first use.
pub fn check_host_key(known_hosts: &str, name: &str, key: &[u8]) -> Result<(), String> {
    let entries = parse_known_hosts(known_hosts);
    let for_host: Vec<&KnownHost> = entries
        .iter()
        .filter(|e| host_matches(&e.patterns, name))
        .collect();
    if for_host.iter().any(|e| e.revoked && e.key == key) {
        return Err(format!(
            "the host key of {name} is marked @revoked in known_hosts"
        ));
    }
    if for_host.iter().any(|e| !e.revoked && e.key == key) {
        return Ok(());
    }
    let fp = base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha256(key));
    if for_host.is_empty() {
        Err(format!(
            "host {name} is not in known_hosts (server key SHA256:{fp}); add its key to the Secret's known_hosts"
        ))
    } else {
        let types: Vec<&str> = for_host.iter().map(|e| e.key_type.as_str()).collect();
        Err(format!(
            "host key mismatch for {name}: the server presented SHA256:{fp}, known_hosts has {} key(s) ({}) for it",
            for_host.len(),
            types.join(", ")
        ))
    }
}

/// Same check when only the SHA-256 of the key is available.
pub fn check_host_key_sha256(known_hosts: &str, name: &str, hash: &[u8; 32]) -> Result<(), String> {
    let entries = parse_known_hosts(known_hosts);
    let ok = entries
        .iter()
        .filter(|e| !e.revoked && host_matches(&e.patterns, name))
        .any(|e| &sha256(&e.key) == hash);
    if ok {
        Ok(())
    } else {
        let fp = base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash);
        Err(format!(
            "host {name} with key SHA256:{fp} is not in known_hosts"
        ))
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// Verifies an HTTPS server certificate (DER) for `host` against the PEM CA bundle.
pub fn verify_server_cert(ca_pem: &[u8], host: &str, der: &[u8]) -> Result<(), String> {
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca.crt: not a PEM certificate bundle: {e:?}"))?;
    if cas.is_empty() {
        return Err("ca.crt holds no certificate".into());
    }
    let anchors: Vec<_> = cas
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca.crt: {e}"))?;
    let leaf = CertificateDer::from(der.to_vec());
    let ee =
        webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("server certificate: {e}"))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| format!("server certificate of {host} is not signed by ca.crt: {e}"))?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("host {host}: {e}"))?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|e| format!("server certificate is not valid for {host}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn key() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .expect("b64")
    }

    #[test]
    fn known_host_plain_port_and_wildcards() {
        let kh = format!(
            "# comment\n[127.0.0.1]:2222 ssh-ed25519 {KEY}\n*.example.com,!bad.example.com ssh-ed25519 {KEY}\n"
        );
        assert!(check_host_key(&kh, "[127.0.0.1]:2222", &key()).is_ok());
        assert!(check_host_key(&kh, "git.example.com", &key()).is_ok());
        let e = check_host_key(&kh, "127.0.0.1", &key()).expect_err("port 22 entry absent");
        assert!(e.contains("is not in known_hosts"), "{e}");
        assert!(check_host_key(&kh, "bad.example.com", &key()).is_err());
        let e = check_host_key(&kh, "[127.0.0.1]:2222", b"other").expect_err("mismatch");
        assert!(e.contains("host key mismatch"), "{e}");
        assert!(
            check_host_key("", "[127.0.0.1]:2222", &key()).is_err(),
            "empty known_hosts trusts nothing"
        );
    }

    #[test]
    fn hashed_and_revoked_entries() {
        // ssh-keygen -H style entry for "[127.0.0.1]:2222".
        let salt = b"0123456789abcdef0123";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).expect("mac");
        mac.update(b"[127.0.0.1]:2222");
        let b64 = base64::engine::general_purpose::STANDARD;
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY}\n",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        assert!(check_host_key(&line, "[127.0.0.1]:2222", &key()).is_ok());
        assert!(check_host_key(&line, "[127.0.0.1]:2223", &key()).is_err());
        let revoked = format!("{line}@revoked [127.0.0.1]:2222 ssh-ed25519 {KEY}\n");
        assert!(
            check_host_key(&revoked, "[127.0.0.1]:2222", &key())
                .expect_err("revoked")
                .contains("@revoked")
        );
        assert!(check_host_key_sha256(&line, "[127.0.0.1]:2222", &sha256(&key())).is_ok());
    }

    #[test]
    fn secret_data_and_redacted_debug() {
        let mut d = BTreeMap::new();
        d.insert("username".to_string(), b"git\n".to_vec());
        d.insert("password".to_string(), b"hunter2".to_vec());
        d.insert("webhookSecret".to_string(), b"s3cret\n".to_vec());
        let c = Credentials::from_secret_data(&d);
        assert_eq!(c.username.as_deref(), Some("git"));
        assert_eq!(c.webhook_secret.as_deref(), Some(&b"s3cret"[..]));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("s3cret"), "{dbg}");
        let secret = Secret {
            data: Some(
                d.into_iter()
                    .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
                    .collect(),
            ),
            ..Default::default()
        };
        assert_eq!(Credentials::from_secret(&secret), c);
        assert_eq!(
            Credentials::from_secret(&Secret::default()),
            Credentials::default()
        );
    }
}
