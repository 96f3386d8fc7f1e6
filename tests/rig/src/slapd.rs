//! A private OpenLDAP server for directory-mapping tests: slapd on 127.0.0.1
//! with a free port, an mdb database in a scratch directory, users with
//! certificates, mail, and Active Directory's `userPrincipalName` and
//! `altSecurityIdentities` attributes (a two-attribute schema of our own,
//! with AD's OIDs).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run;

/// The directory's suffix.
pub const BASE: &str = "dc=example,dc=test";
/// Where the users live.
pub const PEOPLE: &str = "ou=people,dc=example,dc=test";

const AD_SCHEMA: &str = "\
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.867 NAME 'altSecurityIdentities'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'tesseraAdUser' SUP top AUXILIARY
  MAY ( userPrincipalName $ altSecurityIdentities ) )
";

/// A directory user.
#[derive(Debug, Clone, Default)]
pub struct LdapUser {
    /// uid (the login name).
    pub uid: String,
    /// mail values.
    pub mail: Vec<String>,
    /// userPrincipalName.
    pub upn: Option<String>,
    /// altSecurityIdentities values.
    pub alt_security_identities: Vec<String>,
    /// DER certificates for userCertificate;binary.
    pub certificates: Vec<Vec<u8>>,
}

impl LdapUser {
    /// A user with just a uid.
    pub fn new(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            ..Self::default()
        }
    }
}

/// A running slapd; stopped by PID on drop.
#[derive(Debug)]
pub struct Slapd {
    dir: PathBuf,
    child: Option<Child>,
    port: u16,
    tls_port: Option<u16>,
}

/// PEM files for slapd's TLS (StartTLS on the ldap:// port, and ldaps://).
#[derive(Debug, Clone)]
pub struct SlapdTls {
    /// Server certificate.
    pub certificate: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl SlapdTls {
    /// A fresh CA and a server certificate for 127.0.0.1 issued by it, as
    /// PEM files in `dir`: the slapd TLS files, and the CA file clients
    /// trust.
    pub fn for_localhost(dir: &Path) -> (SlapdTls, PathBuf) {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, SanType, PKCS_ECDSA_P256_SHA256,
        };
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Directory CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("server key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().expect("IP"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, &issuer).expect("server certificate");
        std::fs::create_dir_all(dir).expect("TLS directory");
        let tls = SlapdTls {
            certificate: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&tls.certificate, certificate.pem()).expect("server certificate");
        std::fs::write(&tls.key, key.serialize_pem()).expect("server key");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).expect("CA file");
        (tls, ca)
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl Slapd {
    /// Creates the database in `dir` with `users`, and starts slapd.
    pub fn start(dir: &Path, users: &[LdapUser]) -> Self {
        Self::start_with(dir, users, None)
    }

    /// As [`Slapd::start`], with TLS when `tls` is given.
    pub fn start_with(dir: &Path, users: &[LdapUser], tls: Option<&SlapdTls>) -> Self {
        std::fs::create_dir_all(dir.join("db")).expect("slapd db dir");
        std::fs::write(dir.join("ad.schema"), AD_SCHEMA).expect("schema");
        let conf = dir.join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/nis.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 include {schema}\n\
                 pidfile {dir}/slapd.pid\n\
                 {tls}\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 sizelimit unlimited\n\
                 database mdb\n\
                 maxsize 1073741824\n\
                 suffix \"{BASE}\"\n\
                 rootdn \"cn=admin,{BASE}\"\n\
                 rootpw secret\n\
                 directory {dir}/db\n\
                 index objectClass,uid,mail,userPrincipalName,altSecurityIdentities eq\n\
                 index userCertificate eq\n\
                 access to * by * read\n",
                schema = dir.join("ad.schema").display(),
                dir = dir.display(),
                tls = tls
                    .map(|tls| format!(
                        "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                        tls.certificate.display(),
                        tls.key.display()
                    ))
                    .unwrap_or_default()
            ),
        )
        .expect("slapd.conf");
        let ldif = dir.join("base.ldif");
        std::fs::write(&ldif, Self::ldif(dir, users)).expect("ldif");
        run(Command::new("slaptest").arg("-f").arg(&conf).arg("-u"));
        run(Command::new("slapadd")
            .arg("-q")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif));
        let mut slapd = Self {
            dir: dir.to_owned(),
            child: None,
            port: free_port(),
            tls_port: tls.map(|_| free_port()),
        };
        slapd.spawn();
        slapd
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("slapd.log")).expect("slapd log");
        let child = Command::new("slapd")
            .arg("-f")
            .arg(self.dir.join("slapd.conf"))
            .arg("-h")
            .arg(match self.tls_port {
                Some(tls) => format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{tls}/", self.port),
                None => format!("ldap://127.0.0.1:{}/", self.port),
            })
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "slapd did not listen on port {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ldif(dir: &Path, users: &[LdapUser]) -> String {
        let mut text = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n"
        );
        for (index, user) in users.iter().enumerate() {
            let uid = &user.uid;
            text.push_str(&format!(
                "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
                 objectClass: tesseraAdUser\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
                 uidNumber: {n}\ngidNumber: {n}\nhomeDirectory: /home/{uid}\n",
                n = 30000 + index
            ));
            for mail in &user.mail {
                text.push_str(&format!("mail: {mail}\n"));
            }
            if let Some(upn) = &user.upn {
                text.push_str(&format!("userPrincipalName: {upn}\n"));
            }
            for value in &user.alt_security_identities {
                text.push_str(&format!("altSecurityIdentities: {value}\n"));
            }
            for (number, der) in user.certificates.iter().enumerate() {
                let file = dir.join(format!("{uid}-{number}.der"));
                std::fs::write(&file, der).expect("certificate file");
                text.push_str(&format!(
                    "userCertificate;binary:< file://{}\n",
                    file.display()
                ));
            }
            text.push('\n');
        }
        text
    }

    /// The server's URI.
    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The ldaps:// URI, when started with TLS.
    pub fn ldaps_uri(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("ldaps://127.0.0.1:{port}"))
    }

    /// Stops slapd (by PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers: a
/// hung directory. Its thread ends when the returned guard is dropped.
#[derive(Debug)]
pub struct SilentServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    /// Starts listening.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: at most a minute, and never more than 64 connections.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((stream, _)) = listener.accept() {
                    if held.len() < 64 {
                        held.push(stream);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Its URI.
    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
