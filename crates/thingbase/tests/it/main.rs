//! The integration suite: the real server on ephemeral ports, driven over real HTTP, organised
//! by SensorThings conformance class.

mod support;

mod access_control;
mod batch;
mod batch_multipart;
#[cfg(feature = "coap")]
mod coap;
mod create_update_delete;
mod data_arrays;
mod devices;
mod durability;
mod filtering;
mod mqtt_bridge;
mod mqtt_sensorthings;
mod multi_datastream;
mod operations;
mod request_data;
mod sensing_core;
mod several_nodes;
mod timeseries;
mod transfer;
