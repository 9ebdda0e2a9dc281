//! The integration suite: the real server on ephemeral ports, driven over real HTTP, organised
//! by SensorThings conformance class.

mod support;

mod batch_multipart;
mod durability;
mod operations;
mod sensing_core;
