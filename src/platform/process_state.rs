//! STUB (replaced by the full version): what a later run could observe of this process.

/// What a later run could observe of this process.
pub struct ProcessState {
    threads: Option<u32>,
    cwd: Option<std::path::PathBuf>,
}

impl ProcessState {
    pub fn capture() -> Self {
        Self {
            threads: super::thread_count(std::process::id() as i32),
            cwd: std::env::current_dir().ok(),
        }
    }

    pub fn changes(&self) -> Vec<String> {
        let now = Self::capture();
        let mut found = Vec::new();
        if now.threads != self.threads {
            found.push("threads".into());
        }
        if now.cwd != self.cwd {
            found.push("cwd".into());
        }
        found
    }

    pub fn threads_changed(&self) -> bool {
        super::thread_count(std::process::id() as i32) != self.threads
    }
}
