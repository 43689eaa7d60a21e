//! Discovery of the node's identity when the configuration leaves it empty.

use std::net::{IpAddr, Ipv4Addr};

use corral_model::NodeIds;

use crate::config::NodeConfig;

/// Where DC/OS keeps the cluster id.
const DCOS_CLUSTER_ID: &str = "/var/lib/dcos/cluster-id";

/// Fills what the configuration leaves empty: the cluster id from DC/OS' file, the hostname as
/// the host's IP (as dcos-metrics did). The mesos_id comes later, from the agent.
pub fn discover(node: &NodeConfig) -> NodeIds {
    let cluster_id = if node.cluster_id.is_empty() {
        std::fs::read_to_string(DCOS_CLUSTER_ID)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    } else {
        node.cluster_id.clone()
    };
    let hostname = if node.hostname.is_empty() {
        host_ip()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| Ipv4Addr::LOCALHOST.to_string())
    } else {
        node.hostname.clone()
    };
    NodeIds {
        mesos_id: node.mesos_id.clone(),
        cluster_id,
        hostname,
    }
}

/// The first IPv4 address of an interface that is up and not loopback.
fn host_ip() -> Option<IpAddr> {
    let mut found = None;
    // SAFETY: getifaddrs allocates a list that is walked read-only and freed below.
    unsafe {
        let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifap) != 0 {
            return None;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
            let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as libc::c_uint != 0;
            if up
                && !loopback
                && !ifa.ifa_addr.is_null()
                && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
                break;
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    found
}
