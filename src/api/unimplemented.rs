//! Services that are in the contract but not built yet answer UNIMPLEMENTED, naming the
//! issue that builds them, so integrators can generate clients today.

use tonic::Status;

pub fn not_built_yet(rpc: &str, issue: u32) -> Status {
    Status::unimplemented(format!(
        "{rpc} is part of the Jisr contract but not built yet (tracked in issue #{issue})"
    ))
}

use tonic::transport::server::Router;

/// Adds the contract's services that later issues build.
pub fn add_services(router: Router) -> Router {
    router
}
