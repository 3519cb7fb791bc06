//! A real nginx in front of petchat nodes, configured from the one template
//! `deploy/nginx/petchat.conf` exactly as `nginx_render` in scripts/nginx.sh
//! writes it: a private instance in a temporary directory, run in the
//! foreground as a child process, stopped on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The template every nginx of the tests (and of production) is written from.
pub const TEMPLATE: &str = include_str!("../../../../deploy/nginx/petchat.conf");

/// The template's WebSocket location starts at this line.
pub const SOCKET_LOCATION: &str = "location = /v1/ws/chat {";

/// The template with `prefix` as @PREFIX@, `listen` as @LISTEN@ and its
/// @UPSTREAM@ line repeated once per node; comment lines are copied as they
/// are. scripts/nginx.sh does the same (a test compares the two).
pub fn render(prefix: &Path, listen: &str, upstreams: &[SocketAddr]) -> String {
    let prefix = prefix.to_str().expect("a UTF-8 temporary path");
    let mut config = String::with_capacity(TEMPLATE.len() + 64 * upstreams.len());
    for line in TEMPLATE.lines() {
        if line.trim_start().starts_with('#') {
            config.push_str(line);
            config.push('\n');
        } else if line.contains("@UPSTREAM@") {
            for upstream in upstreams {
                config.push_str(&line.replace("@UPSTREAM@", &upstream.to_string()));
                config.push('\n');
            }
        } else {
            config.push_str(&line.replace("@PREFIX@", prefix).replace("@LISTEN@", listen));
            config.push('\n');
        }
    }
    config
}

/// The value of `directive` in the WebSocket location of `config`
/// (`proxy_read_timeout` → `75s`).
pub fn socket_setting<'a>(config: &'a str, directive: &str) -> &'a str {
    let location = &config[config.find(SOCKET_LOCATION).expect("the WebSocket location")..];
    let location = &location[..location.find("\n        }").expect("the location's end")];
    location
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(directive)?.strip_prefix(' ')?.strip_suffix(';'))
        .unwrap_or_else(|| panic!("{directive} in the WebSocket location"))
}

/// `config` with the WebSocket location's read and send timeouts set to
/// `seconds`, for the tests that outlast it (the template's own is 75 s).
pub fn with_socket_timeout(config: &str, seconds: u64) -> String {
    let start = config.find(SOCKET_LOCATION).expect("the WebSocket location");
    let (before, location) = config.split_at(start);
    let mut location = location.to_owned();
    for directive in ["proxy_read_timeout", "proxy_send_timeout"] {
        let old = format!("{directive} {};", socket_setting(config, directive));
        assert!(location.contains(&old), "{old} in the WebSocket location");
        location = location.replacen(&old, &format!("{directive} {seconds}s;"), 1);
    }
    format!("{before}{location}")
}

/// A running nginx.
pub struct Nginx {
    /// Where clients connect.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Nginx {
    /// nginx in front of `upstreams`, on a free loopback port, with the template as it is.
    pub fn start(upstreams: &[SocketAddr]) -> Self {
        Self::start_with(upstreams, |config| config)
    }

    /// As `start`, with the rendered configuration passed through `edit`
    /// first; panics, naming `scripts/test.sh`, when nginx is not installed.
    pub fn start_with(upstreams: &[SocketAddr], edit: impl FnOnce(String) -> String) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let prefix = dir.path();
        std::fs::create_dir_all(prefix.join("logs")).expect("logs directory");
        std::fs::create_dir_all(prefix.join("temp")).expect("temp directory");
        // nginx started as root runs its workers as an unprivileged user,
        // which must reach the temporary directories.
        for path in [prefix.to_path_buf(), prefix.join("temp")] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let config = edit(render(prefix, &addr.to_string(), upstreams));
        std::fs::write(prefix.join("nginx.conf"), config).expect("write nginx.conf");

        let spawned = Command::new("nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-g")
            .arg(format!("daemon off; pid {};", prefix.join("nginx.pid").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                panic!("nginx is not installed: run scripts/test.sh, which installs it (apt-get install nginx)")
            }
            Err(err) => panic!("starting nginx: {err}"),
        };
        let mut nginx = Self { addr, dir, child: Some(child) };
        nginx.wait_listening();
        nginx
    }

    /// The access log so far (one line per request, see the template's `log_format`).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/access.log")).unwrap_or_default()
    }

    /// The access log once `done` holds for it (nginx writes a socket's line
    /// when the socket ends); panics with the log after `WAIT`.
    pub async fn wait_access_log(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + super::WAIT;
        loop {
            let log = self.access_log();
            if done(&log) {
                return log;
            }
            assert!(Instant::now() < deadline, "the access log is not as expected:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything nginx logged so far: the access log and the error log.
    pub fn logs(&self) -> String {
        let errors = std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default();
        format!("{}{errors}", self.access_log())
    }

    /// Fast shutdown: SIGTERM to the master, which stops its workers (a
    /// SIGKILL would leave them running, holding the port).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(self.addr).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("nginx exited with {status} on {}:\n{}", self.addr, self.logs());
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {} within 10 s:\n{}", self.addr, self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
