//! Congestion controllers a peer ships as BPF objects (seed 002 §4.4,
//! TRANSPORT_OPTION 3): loaded into the kernel as a struct_ops
//! `tcp_congestion_ops` and registered under their name, then set on the
//! session's sockets with `TCP_CONGESTION` (see `Inner::finish_program`).
//!
//! The core has already checked local policy (the digest allowlist) and
//! the program's SHA-256. Here an object is refused unless it is one
//! struct_ops map of type `tcp_congestion_ops` and struct_ops programs
//! only: a peer can make this side run a congestion controller, nothing
//! else (no tracing, no scheduler ops, no socket filters). The kernel's
//! verifier then decides whether the code is safe to run.
//!
//! A controller stays registered while a session uses it: sessions that
//! receive the same object (same digest) share one registration, dropped
//! with the last of them. Sockets that still use it keep it alive in the
//! kernel until they close, but no new socket can choose it.
//!
//! Without the `bpf-cc` feature every program is answered "not allowed".

use tcpls_proto::session::options::OptionStatus;

/// Why a program was not loaded: the status and reason the peer gets.
pub(crate) type LoadError = (OptionStatus, String);

#[cfg(feature = "bpf-cc")]
pub(crate) use imp::{load, Controller};

/// A registered controller (never built without the `bpf-cc` feature).
#[cfg(not(feature = "bpf-cc"))]
pub(crate) struct Controller {
    /// The name it registered.
    pub name: String,
}

/// Without the `bpf-cc` feature: refuses.
#[cfg(not(feature = "bpf-cc"))]
pub(crate) fn load(
    _name: &str,
    _digest: &[u8; 32],
    _program: &[u8],
) -> Result<std::sync::Arc<Controller>, LoadError> {
    Err((
        OptionStatus::NotAllowed,
        "this build cannot load eBPF programs (tcpls feature bpf-cc)".into(),
    ))
}

/// Names and digests of the programs loaded by this process and still
/// registered, for reports and tests.
pub fn loaded_congestion_programs() -> Vec<(String, [u8; 32])> {
    #[cfg(feature = "bpf-cc")]
    return imp::loaded();
    #[cfg(not(feature = "bpf-cc"))]
    Vec::new()
}

#[cfg(feature = "bpf-cc")]
mod imp {
    use std::collections::BTreeMap;
    use std::ffi::CStr;
    use std::sync::{Arc, Mutex, MutexGuard, Weak};

    use libbpf_rs::{AsRawLibbpf, MapCore, MapType, ObjectBuilder, PrintLevel, ProgramType};
    use tcpls_proto::session::options::OptionStatus;

    use super::LoadError;

    /// A registered controller: unregistered when dropped (the link is
    /// closed before the object).
    pub(crate) struct Controller {
        /// The name it registered.
        pub name: String,
        digest: [u8; 32],
        _link: libbpf_rs::Link,
        _object: libbpf_rs::Object,
    }

    impl Drop for Controller {
        fn drop(&mut self) {
            tracing::info!(name = %self.name, sha256 = %hex::encode(self.digest), "congestion controller program unregistered");
        }
    }

    /// Registered controllers by digest. Also serialises loading, so the
    /// libbpf log captured in [`LOG`] is that of one load.
    static LOADED: Mutex<BTreeMap<[u8; 32], Weak<Controller>>> = Mutex::new(BTreeMap::new());

    /// What libbpf printed during the current load (its verifier log).
    static LOG: Mutex<String> = Mutex::new(String::new());

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn capture(_level: PrintLevel, msg: String) {
        let mut log = lock(&LOG);
        // A verifier log can be long: keep its end, where the error is.
        if log.len() > 64 << 10 {
            let cut = log.len() - (32 << 10);
            let cut = (cut..log.len())
                .find(|i| log.is_char_boundary(*i))
                .unwrap_or(0);
            log.drain(..cut);
        }
        log.push_str(&msg);
    }

    pub(crate) fn loaded() -> Vec<(String, [u8; 32])> {
        lock(&LOADED)
            .values()
            .filter_map(Weak::upgrade)
            .map(|c| (c.name.clone(), c.digest))
            .collect()
    }

    /// Loads, verifies and registers `program` (which must register
    /// `name`), or finds it registered already.
    pub(crate) fn load(
        name: &str,
        digest: &[u8; 32],
        program: &[u8],
    ) -> Result<Arc<Controller>, LoadError> {
        let mut loaded = lock(&LOADED);
        loaded.retain(|_, c| c.strong_count() > 0);
        if let Some(c) = loaded.get(digest).and_then(Weak::upgrade) {
            if c.name == name {
                return Ok(c);
            }
            return Err((
                OptionStatus::BadValue,
                format!("this program registers {}, not {name}", c.name),
            ));
        }
        lock(&LOG).clear();
        let previous = libbpf_rs::set_print(Some((PrintLevel::Info, capture)));
        let result = load_new(name, digest, program);
        libbpf_rs::set_print(previous);
        let c = Arc::new(result?);
        loaded.insert(*digest, Arc::downgrade(&c));
        tracing::info!(%name, sha256 = %hex::encode(digest), bytes = program.len(), "congestion controller program registered");
        Ok(c)
    }

    fn load_new(name: &str, digest: &[u8; 32], program: &[u8]) -> Result<Controller, LoadError> {
        let bad = |why: String| (OptionStatus::BadValue, why);
        let mut builder = ObjectBuilder::default();
        builder
            .name(format!("tcpls_{}", &hex::encode(digest)[..12]))
            .map_err(|e| bad(e.to_string()))?;
        let open = builder
            .open_memory(program)
            .map_err(|e| bad(format!("not a BPF object libbpf can open: {e}")))?;
        if let Some(p) = open
            .progs()
            .find(|p| p.prog_type() != ProgramType::StructOps)
        {
            return Err(bad(format!(
                "program {} is not struct_ops: only congestion controllers are taken",
                p.name().to_string_lossy()
            )));
        }
        let ops: Vec<_> = open
            .maps()
            .filter(|m| m.map_type() == MapType::StructOps)
            .collect();
        let [ops] = &ops[..] else {
            return Err(bad(format!(
                "{} struct_ops maps: a congestion controller object has one",
                ops.len()
            )));
        };
        // The struct the map instantiates, by name in the object's BTF:
        // libbpf registers it as the kernel's struct of that name.
        let obj_ptr = open.as_libbpf_object().as_ptr();
        let map_ptr = ops.as_libbpf_object().as_ptr();
        // SAFETY: both pointers come from the open object, alive here;
        // libbpf returns NULL (checked) or pointers into the object's BTF.
        let type_name = unsafe {
            let btf = libbpf_rs::libbpf_sys::bpf_object__btf(obj_ptr);
            let id = libbpf_rs::libbpf_sys::bpf_map__btf_value_type_id(map_ptr);
            let t = if btf.is_null() {
                std::ptr::null()
            } else {
                libbpf_rs::libbpf_sys::btf__type_by_id(btf, id)
            };
            let n = if t.is_null() {
                std::ptr::null()
            } else {
                libbpf_rs::libbpf_sys::btf__name_by_offset(btf, (*t).name_off)
            };
            (!n.is_null()).then(|| CStr::from_ptr(n).to_string_lossy().into_owned())
        };
        if type_name.as_deref() != Some("tcp_congestion_ops") {
            return Err((
                OptionStatus::NotAllowed,
                format!(
                    "its struct_ops is {}, not tcp_congestion_ops",
                    type_name.as_deref().unwrap_or("unknown")
                ),
            ));
        }
        let mut object = open.load().map_err(|e| {
            let log = lock(&LOG);
            tracing::debug!(%name, log = %log, "BPF load failed");
            let why = verifier_error(&log).unwrap_or_else(|| e.to_string());
            let status = if e.kind() == libbpf_rs::ErrorKind::PermissionDenied {
                OptionStatus::Failed
            } else {
                OptionStatus::BadValue
            };
            (status, format!("load failed: {why}"))
        })?;
        let mut map = object
            .maps_mut()
            .find(|m| m.map_type() == MapType::StructOps)
            .ok_or_else(|| bad("the struct_ops map went away".into()))?;
        let link = map.attach_struct_ops().map_err(|e| {
            let why = match e.kind() {
                libbpf_rs::ErrorKind::AlreadyExists => {
                    format!("a congestion controller named {name} exists already")
                }
                _ => e.to_string(),
            };
            (OptionStatus::Failed, format!("registering failed: {why}"))
        })?;
        Ok(Controller {
            name: name.to_string(),
            digest: *digest,
            _link: link,
            _object: object,
        })
    }

    /// The verifier's complaint in a libbpf log: the last line of the
    /// program load log before its end marker (e.g. "no write support to
    /// tcp_sock at off 1672").
    fn verifier_error(log: &str) -> Option<String> {
        if !log.contains("-- BEGIN PROG LOAD LOG --") {
            return None;
        }
        let body = log.split("-- BEGIN PROG LOAD LOG --").last()?;
        let body = body.split("-- END PROG LOAD LOG --").next()?;
        let lines: Vec<&str> = body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("processed ") && !l.starts_with(';'))
            .collect();
        let last = lines.last()?;
        Some(format!("the verifier refused it: {last}"))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_verifiers_complaint_is_found_in_the_log() {
            let log = "libbpf: prog 'bad': BPF program load failed: Permission denied\n\
                       libbpf: prog 'bad': -- BEGIN PROG LOAD LOG --\n\
                       0: R1=ctx() R10=fp0\n; tcp_sk(sk)->snd_una = ack;\n\
                       3: (63) *(u32 *)(r1 +1500) = r2\n\
                       no write support to tcp_sock at off 1672\n\
                       processed 4 insns (limit 1000000)\n\
                       -- END PROG LOAD LOG --\n";
            assert_eq!(
                super::verifier_error(log).unwrap(),
                "the verifier refused it: no write support to tcp_sock at off 1672"
            );
            assert_eq!(super::verifier_error("nothing"), None);
        }
    }
}
