//! ENI → PCI address.
//!
//! 1. `dpdkPCIAddress` (the device's `pciAddress` in the DPDKNodeState spec) when set. It
//!    is not trusted: when IMDS answers, the MAC it lists for the ENI goes with the target,
//!    and the safety check refuses a device whose MAC differs.
//! 2. The journal, for a device the agent already bound: its netdev (and so its MAC) is gone
//!    from sysfs, but the journal recorded the ENI ID and MAC before binding.
//! 3. IMDSv2: a session token (`PUT /latest/api/token`), then
//!    `meta-data/network/interfaces/macs/<mac>/interface-id` for each MAC until one names
//!    the ENI, then `/sys/class/net/*/address` == MAC → the netdev's PCI device.

use std::time::{Duration, Instant};

use dpdk_bridge::api::DesiredDevice;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::error::Error;
use crate::journal::Journal;
use crate::reconcile::Target;
use crate::safety::EniMac;
use crate::sysfs::{PciAddress, Sysfs};

/// The instance metadata service's address on EC2.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
const TOKEN_TTL_SECONDS: u64 = 21600;
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// A small IMDSv2 client: session token first, then token-authenticated GETs.
pub struct Imds {
    host: String,
    port: u16,
    endpoint: String,
    timeout: Duration,
    token: Mutex<Option<(String, Instant)>>,
}

impl Imds {
    /// `endpoint` is `http://host[:port]` (IMDS speaks plain HTTP on a link-local address).
    pub fn new(endpoint: &str) -> Result<Self, Error> {
        let uri: http::Uri = endpoint.parse().map_err(|e| Error::Imds {
            url: endpoint.to_string(),
            message: format!("not a URL: {e}"),
        })?;
        if uri.scheme_str() != Some("http") {
            return Err(Error::Imds {
                url: endpoint.to_string(),
                message: "only http:// endpoints (IMDS is plain HTTP)".into(),
            });
        }
        let host = uri.host().ok_or_else(|| Error::Imds {
            url: endpoint.to_string(),
            message: "no host".into(),
        })?;
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: uri.port_u16().unwrap_or(80),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(2),
            token: Mutex::new(None),
        })
    }

    /// One HTTP/1.1 exchange on a fresh connection: (status, body).
    async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<(u16, String), Error> {
        let url = format!("{}{path}", self.endpoint);
        let err = |message: String| Error::Imds {
            url: url.clone(),
            message,
        };
        let exchange = async {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| err(format!("connect: {e}")))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| err(format!("handshake: {e}")))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, self.host.as_str());
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            let req = req
                .body(Empty::<Bytes>::new())
                .map_err(|e| err(format!("request: {e}")))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| err(format!("request: {e}")))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| err(format!("body: {e}")))?
                .to_bytes();
            Ok::<_, Error>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                err(format!(
                    "no answer within {:?} (is the pod on the host network? IMDS hop limit 1)",
                    self.timeout
                ))
            })?
    }

    /// A session token, reused until shortly before it expires.
    async fn token(&self, refresh: bool) -> Result<String, Error> {
        let mut cached = self.token.lock().await;
        if !refresh
            && let Some((t, expires)) = cached.as_ref()
            && Instant::now() < *expires
        {
            return Ok(t.clone());
        }
        let (status, body) = self
            .request(
                http::Method::PUT,
                "/latest/api/token",
                &[(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS.to_string())],
            )
            .await?;
        if status != 200 {
            return Err(Error::Imds {
                url: format!("{}/latest/api/token", self.endpoint),
                message: format!("token request answered {status}: {}", body.trim()),
            });
        }
        let token = body.trim().to_string();
        *cached = Some((
            token.clone(),
            Instant::now() + Duration::from_secs(TOKEN_TTL_SECONDS - 60),
        ));
        Ok(token)
    }

    /// `GET /latest/meta-data/<path>`; `None` on 404. A 401 (expired token) refreshes the
    /// token once.
    pub async fn get(&self, path: &str) -> Result<Option<String>, Error> {
        let full = format!("/latest/meta-data/{}", path.trim_start_matches('/'));
        for refresh in [false, true] {
            let token = self.token(refresh).await?;
            let (status, body) = self
                .request(http::Method::GET, &full, &[(TOKEN_HEADER, token)])
                .await?;
            match status {
                200 => return Ok(Some(body)),
                404 => return Ok(None),
                401 if !refresh => continue,
                _ => {
                    return Err(Error::Imds {
                        url: format!("{}{full}", self.endpoint),
                        message: format!("answered {status}: {}", body.trim()),
                    });
                }
            }
        }
        Err(Error::Imds {
            url: format!("{}{full}", self.endpoint),
            message: "401 even with a fresh token".into(),
        })
    }

    /// The MAC of the interface whose `interface-id` is `eni_id`.
    pub async fn mac_for_eni(&self, eni_id: &str) -> Result<Option<String>, Error> {
        let list = self
            .get("network/interfaces/macs/")
            .await?
            .unwrap_or_default();
        for mac in list
            .lines()
            .map(|l| l.trim().trim_end_matches('/'))
            .filter(|l| !l.is_empty())
        {
            let id = self
                .get(&format!("network/interfaces/macs/{mac}/interface-id"))
                .await?;
            debug!(mac, interface_id = ?id, "IMDS interface");
            if id.as_deref().map(str::trim) == Some(eni_id) {
                return Ok(Some(mac.to_ascii_lowercase()));
            }
        }
        Ok(None)
    }

    /// The instance's primary MAC (`meta-data/mac`).
    pub async fn primary_mac(&self) -> Result<Option<String>, Error> {
        Ok(self
            .get("mac")
            .await?
            .map(|m| m.trim().to_ascii_lowercase()))
    }
}

/// Resolves one desired device to a [`Target`].
pub async fn resolve(
    desired: &DesiredDevice,
    sysfs: &Sysfs,
    journal: &Journal,
    imds: Option<&Imds>,
) -> Result<Target, Error> {
    let index = desired.device_index;
    let target = |address: PciAddress, eni_mac: EniMac| Target {
        device_index: index,
        node_eni: Some(desired.node_eni.clone()),
        eni_id: desired.eni_id.clone(),
        address,
        driver: desired.driver.as_str().to_string(),
        resource_name: Some(desired.resource_name.clone()),
        eni_mac,
    };
    if let Some(pci) = &desired.pci_address {
        let address = PciAddress::parse(pci)?;
        let eni_mac = match (imds, desired.eni_id.as_deref()) {
            (Some(imds), Some(eni)) => eni_mac(imds, eni).await,
            _ => EniMac::Unchecked,
        };
        return Ok(target(address, eni_mac));
    }
    let Some(eni) = desired.eni_id.as_deref() else {
        return Err(Error::Mapping {
            device_index: index,
            message: format!(
                "NodeENI {} has neither dpdkPCIAddress nor an attachment with an ENI ID for this node yet",
                desired.node_eni
            ),
        });
    };
    if let Some(e) = journal.find_by_eni(eni) {
        return Ok(target(e.address.clone(), EniMac::Unchecked));
    }
    let imds = imds.ok_or_else(|| Error::Mapping {
        device_index: index,
        message: format!(
            "{eni}: no dpdkPCIAddress and IMDS is disabled, so the ENI cannot be found"
        ),
    })?;
    let mac = imds.mac_for_eni(eni).await?.ok_or_else(|| Error::Mapping {
        device_index: index,
        message: format!("IMDS lists no interface whose interface-id is {eni} (not attached to this instance yet?)"),
    })?;
    let listed = EniMac::Listed {
        eni: eni.to_string(),
        mac: mac.clone(),
    };
    if let Some(e) = journal.find_by_mac(&mac) {
        return Ok(target(e.address.clone(), listed));
    }
    let iface = sysfs
        .net_interfaces()?
        .into_iter()
        .find(|i| i.mac == mac)
        .ok_or_else(|| Error::Mapping {
            device_index: index,
            message: format!(
                "{eni} has MAC {mac} in IMDS, but no interface in {} has that address",
                sysfs.path("class/net").display()
            ),
        })?;
    let address = iface.pci_address.ok_or_else(|| Error::Mapping {
        device_index: index,
        message: format!(
            "{eni} is interface {} (MAC {mac}), which is not a PCI device",
            iface.name
        ),
    })?;
    debug!(eni, mac, interface = %iface.name, %address, "mapped ENI to PCI device");
    Ok(target(address, listed))
}

/// What IMDS lists as `eni`'s MAC; unchecked when IMDS does not answer (the other checks
/// still apply).
async fn eni_mac(imds: &Imds, eni: &str) -> EniMac {
    match imds.mac_for_eni(eni).await {
        Ok(Some(mac)) => EniMac::Listed {
            eni: eni.to_string(),
            mac,
        },
        Ok(None) => EniMac::NotListed {
            eni: eni.to_string(),
        },
        Err(e) => {
            warn!(eni, error = %e, "IMDS: cannot confirm the MAC of dpdkPCIAddress's device");
            EniMac::Unchecked
        }
    }
}
