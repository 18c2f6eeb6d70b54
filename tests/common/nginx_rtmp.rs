//! Debian's nginx with the RTMP module (`libnginx-mod-rtmp`): a real RTMP server for
//! relays to push to and pull from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{require_tool, wait_until};

/// nginx with the RTMP module: `application live { live on; }` on a free port. One process
/// (`master_process off`), so no worker changes user and its files may live anywhere.
pub struct NginxRtmp {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl NginxRtmp {
    /// On a free port below the ephemeral range (32768 and up), so that no client's
    /// source port can be it (a connect while nginx is down would connect to itself).
    pub fn start() -> Self {
        let seed = std::process::id() as usize * 7919
            + std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as usize);
        let port = (0..2000)
            .map(|i| 20_000 + ((seed + i * 104_729) % 12_000) as u16)
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port in 20000..32000");
        Self::start_on(port)
    }

    /// On `port` (to start one again where it was).
    pub fn start_on(port: u16) -> Self {
        let module = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
        assert!(
            std::path::Path::new(module).exists(),
            "{module} is missing: install libnginx-mod-rtmp (the README's test command does)"
        );
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|p| Command::new(p).arg("-v").output().is_ok())
            .map(String::from)
            .unwrap_or_else(|| require_tool("nginx").display().to_string());
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("livegate-nginx-rtmp-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let conf = format!(
            "load_module {module};\ndaemon off;\nmaster_process off;\nerror_log {dir}/logs/error.log info;\n\
             pid {dir}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
             application live {{ live on; }} }} }}\n",
            dir = dir.display()
        );
        let path = dir.join("rtmp.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(&nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        // ready once it wrote its pid file (after binding); not by connecting: a connect to
        // a port nobody listens on yet can pick that same port as its source and connect to
        // itself, which then keeps nginx from binding it
        let mut child = child;
        let pid_file = dir.join("nginx.pid");
        let ready = wait_until(Duration::from_secs(10), || pid_file.exists() || !matches!(child.try_wait(), Ok(None)));
        if !ready || !matches!(child.try_wait(), Ok(None)) {
            let log = std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default();
            panic!("nginx-rtmp did not start on port {port}: {log}");
        }
        NginxRtmp { child, port, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

impl NginxRtmp {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NginxRtmp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
