//! Integration tests: a real gateway on loopback, real TLS with real client
//! certificates, real SQLite and PostgreSQL. One test binary, one link.

mod applications;
mod audit;
mod cli;
mod common;
mod delivery;
mod directory;
mod documents;
mod faults;
mod information_requests;
mod layout;
mod limits;
mod operations;
mod policy;
mod properties;
mod referrals;
mod rest;
mod revocation;
mod service;
mod store;
mod time_frames;
mod tls;
