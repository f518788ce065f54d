//! A physical standby of a private server, for failover tests.
//!
//! The npm server builds ship no `pg_basebackup`, so the standby is made the way a backup
//! tool does it: the low-level backup API (`pg_backup_start` … file copy …
//! `pg_backup_stop`, whose label becomes `backup_label`), then `standby.signal` and a
//! `primary_conninfo` with a physical slot reserved before the copy, so every WAL segment
//! the copy needs is still on the primary to stream.

use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{run_ok, PgServer};

impl PgServer {
    /// Starts a hot standby of `primary` (a private server), streaming through the physical
    /// slot `physical_slot` (created here), with `extra_conf` appended to its config (e.g.
    /// `sync_replication_slots = on`). Stopped and removed when dropped, like any server.
    pub async fn start_standby_of(
        primary: &PgServer,
        physical_slot: &str,
        extra_conf: &str,
    ) -> Result<PgServer> {
        let client = primary.client("postgres").await;
        client
            .batch_execute(&format!(
                "SELECT pg_create_physical_replication_slot('{physical_slot}', true)"
            ))
            .await
            .context("creating the standby's physical slot")?;
        let (start, stop) = if primary.major() >= 15 {
            (
                "SELECT pg_backup_start('cdc-standby', true)",
                "SELECT labelfile FROM pg_backup_stop(false)",
            )
        } else {
            (
                "SELECT pg_start_backup('cdc-standby', true, false)",
                "SELECT labelfile FROM pg_stop_backup(false)",
            )
        };
        client.batch_execute(start).await.context("backup start")?;
        let mut standby = PgServer::empty()?;
        // cp -a keeps owners and modes (the server's user, 0700/0600).
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&primary.data).arg(&standby.data);
        let copied = run_ok(cp, None, Duration::from_secs(120)).context("copying the data dir");
        let label = client.query_one(stop, &[]).await.context("backup stop");
        copied?;
        let label: String = label?.get(0);
        // What a base backup leaves out: the primary's pid file, its WAL (streamed from
        // the slot instead), its slots.
        for name in ["postmaster.pid", "postmaster.opts"] {
            let _ = fs::remove_file(standby.data.join(name));
        }
        for dir in ["pg_wal", "pg_replslot"] {
            for entry in fs::read_dir(standby.data.join(dir))? {
                let p = entry?.path();
                if p.is_file() {
                    fs::remove_file(&p)?;
                } else if dir == "pg_replslot" {
                    fs::remove_dir_all(&p)?;
                }
            }
        }
        // Files written below must belong to the server's user, as cp -a kept the rest.
        let write = |name: &str, text: &str| -> Result<()> {
            let p = standby.data.join(name);
            fs::write(&p, text)?;
            if let Some((uid, gid)) = standby.run_as {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
            }
            Ok(())
        };
        write("backup_label", &label)?;
        write("standby.signal", "")?;
        let conf = fs::read_to_string(standby.data.join("postgresql.conf"))?;
        write(
            "postgresql.conf",
            &format!(
                "{conf}\n# --- standby ---\nunix_socket_directories = '{dir}'\nhot_standby = on\n\
                 primary_conninfo = 'host=127.0.0.1 port={port} user=postgres dbname=postgres application_name=standby'\n\
                 primary_slot_name = '{physical_slot}'\n{extra_conf}\n",
                dir = standby.dir.display(),
                port = primary.port(),
            ),
        )?;
        standby.major = primary.major();
        standby.start_on_free_port()?;
        Ok(standby)
    }

    /// Promotes a standby (`pg_promote`, waiting until it is done).
    pub async fn promote(&self) -> Result<()> {
        let promoted: bool = self
            .client("postgres")
            .await
            .query_one("SELECT pg_promote(true, 60)", &[])
            .await
            .context("pg_promote")?
            .get(0);
        anyhow::ensure!(promoted, "pg_promote did not finish within 60 s");
        Ok(())
    }
}
