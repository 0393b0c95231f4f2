//! `leakmon-gateway`: MQTT to InfluxDB, liveness and Swarm rescheduling. Ingest and control
//! arrive with the next issues; for now the binary only knows its version.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version" | "-V") => {
            println!("leakmon-gateway {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("leakmon-gateway: not implemented yet (ingest and control are coming)");
            ExitCode::from(2)
        }
    }
}
