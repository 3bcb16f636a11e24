//! aiosmtpd as a real SMTP relay for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::{free_port, start_listening, stop};

/// aiosmtpd (PyPI, in the test command's virtual environment) as the
/// venue's SMTP relay, keeping what it receives in a Maildir.
pub struct SmtpServer {
    pub port: u16,
    maildir: PathBuf,
    child: Option<Child>,
}

impl SmtpServer {
    pub fn python() -> PathBuf {
        std::env::var_os("PRESSLINE_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/pressline/venv/bin/python")
            })
    }

    pub fn start(dir: &Path) -> SmtpServer {
        SmtpServer::start_on(dir, free_port())
    }

    /// On a port chosen before (one a client was already told of).
    pub fn start_on(dir: &Path, port: u16) -> SmtpServer {
        let mut s = SmtpServer {
            port,
            maildir: dir.join("maildir"),
            child: None,
        };
        s.restart();
        s
    }

    pub fn restart(&mut self) {
        let mut cmd = Command::new(Self::python());
        cmd.args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{}", self.port),
        ])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&self.maildir);
        self.child = Some(start_listening(
            cmd,
            self.port,
            "the SMTP server (aiosmtpd, installed by ./scripts/test.sh)",
        ));
    }

    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    /// Every message received, as text.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort_by_key(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
