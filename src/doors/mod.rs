//! The front doors. Each turns what it received into guard actions and back;
//! none decides on its own.

pub mod admin;
pub mod api;
pub mod modbus;
pub mod ssh;
pub mod web;
