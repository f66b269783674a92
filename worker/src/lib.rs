//! The Switch delivery worker. Modules point one way: [`startup`] wires a
//! worker; [`runtime`] runs deliveries; [`scheduling`] decides which job
//! starts when; [`deliver`] makes one attempt and [`decide`] (pure) says what
//! it means; [`settle`] applies that to the queue and the database.

pub mod archiver;
pub mod decide;
pub mod deliver;
pub mod metrics;
pub mod recorder;
pub mod request;
pub mod runtime;
pub mod scheduling;
pub mod send;
pub mod settle;
pub mod startup;
pub mod target;
