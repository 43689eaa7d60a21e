//! Batched datagram reception: `recvmmsg` into a fixed ring of 64 KiB buffers, with the
//! kernel's per-socket drop counter (`SO_RXQ_OVFL`) read from the control messages.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// Largest datagram accepted: the UDP maximum.
pub const MAX_DATAGRAM: usize = 65_536;
/// Datagrams read per system call.
pub const BATCH: usize = 32;

/// Control buffer space for one `SO_RXQ_OVFL` u32 (CMSG_SPACE(4)), generously rounded.
const CONTROL_LEN: usize = 64;

/// Buffers and headers for one `recvmmsg` batch; reused for every call.
pub struct RecvBatch {
    buffers: Vec<u8>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    control: Vec<u8>,
    /// Source addresses, one per datagram.
    names: Vec<libc::sockaddr_storage>,
    /// Datagrams received by the last call.
    received: usize,
}

// The raw pointers inside point into the batch's own heap buffers, which move with it.
unsafe impl Send for RecvBatch {}

/// One received datagram.
pub struct Datagram<'a> {
    pub data: &'a [u8],
    /// The sender's IP (UDP only).
    pub source: Option<std::net::IpAddr>,
    /// The datagram was larger than the buffer and was cut.
    pub truncated: bool,
}

impl RecvBatch {
    pub fn new() -> Self {
        let buffers = vec![0u8; BATCH * MAX_DATAGRAM];
        let control = vec![0u8; BATCH * CONTROL_LEN];
        let mut batch = RecvBatch {
            buffers,
            iovecs: Vec::with_capacity(BATCH),
            headers: Vec::with_capacity(BATCH),
            control,
            // SAFETY: all-zero is a valid sockaddr_storage.
            names: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
            received: 0,
        };
        for i in 0..BATCH {
            batch.iovecs.push(libc::iovec {
                // SAFETY: in bounds of `buffers`, which lives as long as the batch.
                iov_base: unsafe { batch.buffers.as_mut_ptr().add(i * MAX_DATAGRAM) }
                    as *mut libc::c_void,
                iov_len: MAX_DATAGRAM,
            });
        }
        for i in 0..BATCH {
            // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
            let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            h.msg_hdr.msg_iov = &mut batch.iovecs[i] as *mut libc::iovec;
            h.msg_hdr.msg_iovlen = 1;
            batch.headers.push(h);
        }
        batch
    }

    /// Blocks until at least one datagram is available (or the socket's receive timeout
    /// passes), then takes every queued datagram up to the batch size.
    /// Returns the number received; `Ok(0)` on timeout.
    pub fn recv(&mut self, fd: RawFd, wait: bool) -> io::Result<usize> {
        for (i, h) in self.headers.iter_mut().enumerate() {
            // SAFETY: in bounds of `control`.
            h.msg_hdr.msg_control =
                unsafe { self.control.as_mut_ptr().add(i * CONTROL_LEN) } as *mut libc::c_void;
            h.msg_hdr.msg_controllen = CONTROL_LEN as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_hdr.msg_name =
                &mut self.names[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_len = 0;
        }
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // SAFETY: headers point at buffers owned by self, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.received = 0;
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// The datagrams of the last `recv`.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> {
        self.headers[..self.received]
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let len = (h.msg_len as usize).min(MAX_DATAGRAM);
                Datagram {
                    data: &self.buffers[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len],
                    source: source_ip(&self.names[i], h.msg_hdr.msg_namelen),
                    truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                }
            })
    }

    /// The socket's cumulative kernel drop count, from the newest datagram that carried one.
    pub fn kernel_drops(&self) -> Option<u32> {
        self.headers[..self.received]
            .iter()
            .rev()
            .find_map(|h| rxq_ovfl(&h.msg_hdr))
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

fn source_ip(addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.ss_family as i32 {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(
                ip.to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(ip)),
            )
        }
        _ => None,
    }
}

fn rxq_ovfl(msg: &libc::msghdr) -> Option<u32> {
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
    // msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                let data = libc::CMSG_DATA(cmsg) as *const u32;
                return Some(std::ptr::read_unaligned(data));
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

/// Asks the kernel to report its drop counter with each datagram.
pub fn enable_rxq_ovfl(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: plain setsockopt with an int option.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Requests a receive buffer of `bytes`: first within `rmem_max`, then with `SO_RCVBUFFORCE`
/// (allowed with CAP_NET_ADMIN). Returns the effective size the kernel reports.
pub fn set_receive_buffer(socket: &socket2::Socket, bytes: usize) -> io::Result<usize> {
    let _ = socket.set_recv_buffer_size(bytes);
    // The kernel reports double the requested size (bookkeeping overhead included).
    if socket.recv_buffer_size()? < bytes {
        let v: libc::c_int = bytes.min(i32::MAX as usize) as libc::c_int;
        use std::os::fd::AsRawFd;
        // SAFETY: plain setsockopt with an int option; failure (no privilege) is fine.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    socket.recv_buffer_size()
}
