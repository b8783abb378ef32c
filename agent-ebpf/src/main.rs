//! interlock's kernel side: cgroup connect hooks that redirect chosen
//! destinations to the daemon, and sock_ops that lets the daemon find the
//! redirected flow again from an accepted socket.
#![no_std]
#![no_main]
// Atomic adds on map values (core's atomics have no RMW on the BPF target).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
