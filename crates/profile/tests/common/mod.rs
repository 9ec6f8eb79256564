//! Shared builders for the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::net::IpAddr;
use std::time::Duration;

use kestrel_profile::testing::TEST_MODEL_ID;
use kestrel_profile::{
    Access, Direction, Event, FileEvent, NetworkEvent, Peer, ProcessEvent, Profile, ProfileConfig,
    Protocol,
};

/// A profile with default settings.
pub fn profile() -> Profile {
    Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap()
}

/// A profile with `config`.
pub fn profile_with(config: ProfileConfig) -> Profile {
    Profile::new(config, TEST_MODEL_ID, Duration::ZERO).unwrap()
}

/// A process event.
pub fn proc<'a>(image: &'a str, parent: &'a str, exe: &'a [u8], args: &'a str) -> Event<'a> {
    Event::Process(ProcessEvent {
        image: image.as_bytes(),
        parent: parent.as_bytes(),
        exe,
        args,
    })
}

/// A file event of image `app:v1`.
pub fn file<'a>(process: &'a str, access: Access, path: &'a [u8]) -> Event<'a> {
    Event::File(FileEvent {
        image: b"app:v1",
        process: process.as_bytes(),
        access,
        path,
    })
}

/// An outbound TCP event to an address.
pub fn net(peer: IpAddr, port: u16) -> Event<'static> {
    Event::Network(NetworkEvent {
        image: b"app:v1",
        process: b"app",
        direction: Direction::Outbound,
        peer: Peer::Ip(peer),
        protocol: Protocol::Tcp,
        port,
    })
}

/// An outbound TCP event to a named peer.
pub fn net_named(name: &[u8], port: u16) -> Event<'_> {
    Event::Network(NetworkEvent {
        image: b"app:v1",
        process: b"app",
        direction: Direction::Outbound,
        peer: Peer::Name(name),
        protocol: Protocol::Tcp,
        port,
    })
}
