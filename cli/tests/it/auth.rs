//! Every ticketing service that checks sessions refuses to start without `JWT_KEY`, as the
//! binary runs it (`serve`). The auth service's own behaviour is tested in its crate
//! (`services/ticketing/auth/tests/auth.rs`).

use crate::support;

use support::process;

#[test]
fn every_ticketing_service_that_checks_sessions_refuses_to_start_without_jwt_key() {
    // The services that check sessions; the others never get the key.
    for service in switchyard_registry::TICKETING
        .services
        .iter()
        .filter(|s| s.kind == switchyard_registry::Kind::App && s.sessions)
    {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().display().to_string();
        let name = format!("ticketing/{}", service.name);
        let (status, stderr) = process::run(
            &["serve", &name],
            &[
                ("DATA_DIR", data.as_str()),
                ("OPS_PORT", "0"),
                ("PORT", "0"),
            ],
        );
        assert!(!status.success(), "{name} started without JWT_KEY");
        assert!(stderr.contains("JWT_KEY"), "{name}: {stderr}");
    }
}
