//! Registering a resource with the kubelet (`Registration.Register` on kubelet.sock).

use std::path::Path;
use std::time::Duration;

use super::api::v1beta1::RegisterRequest;
use super::api::v1beta1::registration_client::RegistrationClient;
use super::api::{KUBELET_SOCKET, VERSION, unix_channel};
use super::service::plugin_options;
use crate::error::Error;

/// How long one Register call may take, connection included.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// The request this plugin sends: version v1beta1, the socket's file name as the
/// endpoint, and GetPreferredAllocation advertised.
pub fn register_request(resource: &str, endpoint: &str) -> RegisterRequest {
    RegisterRequest {
        version: VERSION.to_string(),
        endpoint: endpoint.to_string(),
        resource_name: resource.to_string(),
        options: Some(plugin_options()),
    }
}

/// Calls Register on `<plugin_dir>/kubelet.sock`. The plugin must already be serving
/// on `<plugin_dir>/<endpoint>`: the kubelet dials it back right away.
pub async fn register(plugin_dir: &Path, resource: &str, endpoint: &str) -> Result<(), Error> {
    let socket = plugin_dir.join(KUBELET_SOCKET);
    let failed = |message: String| Error::Register {
        resource: resource.to_string(),
        kubelet_socket: socket.display().to_string(),
        message,
    };
    let call = async {
        let channel = unix_channel(&socket)
            .await
            .map_err(|e| failed(format!("connecting: {e}")))?;
        RegistrationClient::new(channel)
            .register(register_request(resource, endpoint))
            .await
            .map_err(|s| failed(format!("kubelet refused: {}: {}", s.code(), s.message())))?;
        Ok(())
    };
    tokio::time::timeout(REGISTER_TIMEOUT, call)
        .await
        .map_err(|_| failed(format!("no answer within {}s", REGISTER_TIMEOUT.as_secs())))?
}
