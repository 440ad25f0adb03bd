//! Names derived from a resource name: the plugin's socket file and the environment
//! variables a container gets. Pure functions; the formats are what kubelet and
//! sriov-network-device-plugin users already rely on.

/// Environment variable prefix used by sriov-network-device-plugin (and DPDK apps reading it).
const ENV_PREFIX: &str = "PCIDEVICE";

/// A resource name with its domain: `intel_sriov_netdevice_2` becomes
/// `<default_prefix>/intel_sriov_netdevice_2`; names that already carry a domain are kept.
pub fn qualify(resource_name: &str, default_prefix: &str) -> String {
    let name = resource_name.trim();
    if name.contains('/') || default_prefix.is_empty() {
        name.to_string()
    } else {
        format!("{default_prefix}/{name}")
    }
}

/// The plugin's socket file name, relative to the device-plugin dir:
/// `intel.com/intel_sriov_netdevice_2` → `intel.com_intel_sriov_netdevice_2.sock`.
/// This is also the `endpoint` sent in RegisterRequest.
pub fn socket_file_name(resource_name: &str) -> String {
    format!("{}.sock", resource_name.replace('/', "_"))
}

/// `PCIDEVICE_<PREFIX>_<NAME>`: upper case, with `.`, `/` and `-` turned into `_`.
/// `intel.com/intel_sriov_netdevice_2` → `PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2`.
pub fn env_var_name(resource_name: &str) -> String {
    let tail: String = resource_name
        .chars()
        .map(|c| match c {
            '.' | '/' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("{ENV_PREFIX}_{tail}")
}

/// The companion variable with per-device details: `<env_var_name>_INFO`.
pub fn info_env_var_name(resource_name: &str) -> String {
    format!("{}_INFO", env_var_name(resource_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_resource_names() {
        let r = "intel.com/intel_sriov_netdevice_2";
        assert_eq!(
            env_var_name(r),
            "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2"
        );
        assert_eq!(
            info_env_var_name(r),
            "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE_2_INFO"
        );
        assert_eq!(
            socket_file_name(r),
            "intel.com_intel_sriov_netdevice_2.sock"
        );
    }

    #[test]
    fn dashes_and_dots_become_underscores() {
        assert_eq!(
            env_var_name("example.io/dpdk-ena-v2"),
            "PCIDEVICE_EXAMPLE_IO_DPDK_ENA_V2"
        );
        assert_eq!(
            socket_file_name("example.io/dpdk-ena-v2"),
            "example.io_dpdk-ena-v2.sock"
        );
    }

    #[test]
    fn qualify_adds_the_default_prefix_only_to_bare_names() {
        assert_eq!(
            qualify("intel_sriov_netdevice_2", "intel.com"),
            "intel.com/intel_sriov_netdevice_2"
        );
        assert_eq!(
            qualify("amazon.com/ena_dpdk", "intel.com"),
            "amazon.com/ena_dpdk"
        );
        assert_eq!(qualify("bare", ""), "bare");
    }
}
