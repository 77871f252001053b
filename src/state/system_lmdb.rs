//! The system's own LMDB library (`liblmdb.so.0`), loaded at run time, for the one file Exim reads.
//!
//! Why not heed, which keeps the journal: heed builds its bundled LMDB from the `mdb.master`
//! branch, whose lock file has format version 2; the 0.9 releases that distributions ship — and
//! that Exim's `lmdb` lookup is linked against — use version 1. Two processes whose libraries
//! disagree cannot have one environment open at the same time: whichever opens second fails with
//! `MDB_VERSION_MISMATCH`. With heed, every Exim lookup failed (the router deferred) for as long
//! as the daemon ran. So the verdict file is written through the very library Exim reads it with,
//! and no lock format has to match anything else. Loading it at run time (rather than linking)
//! keeps it out of the build and out of every command that has no verdict database.
//!
//! Only the dozen calls the verdict database needs are bound; no crate offers a maintained binding
//! to the system's library (the `lmdb-sys` crates also bundle their own copy).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

const MDB_NOSUBDIR: c_uint = 0x4000;
const MDB_CREATE: c_uint = 0x40000;
/// `mdb_get`/`mdb_cursor_get`: no (more) such key.
const MDB_NOTFOUND: c_int = -30798;
/// `MDB_cursor_op` values (the enum's order in lmdb.h).
const MDB_FIRST: c_int = 0;
const MDB_NEXT: c_int = 8;

/// The soname Exim's `lmdb` lookup is linked against on Debian and its derivatives.
const LIBRARY: &CStr = c"liblmdb.so.0";

#[repr(C)]
struct MdbVal {
    size: usize,
    data: *mut c_void,
}

impl MdbVal {
    fn of(bytes: &[u8]) -> MdbVal {
        MdbVal { size: bytes.len(), data: bytes.as_ptr() as *mut c_void }
    }

    fn empty() -> MdbVal {
        MdbVal { size: 0, data: ptr::null_mut() }
    }

    /// SAFETY: `self` was filled in by LMDB inside a transaction that is still open.
    unsafe fn to_vec(&self) -> Vec<u8> {
        if self.size == 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts(self.data as *const u8, self.size).to_vec()
    }
}

type Env = c_void;
type Txn = c_void;
type Cursor = c_void;

/// The library's entry points, resolved once.
struct Api {
    strerror: unsafe extern "C" fn(c_int) -> *const c_char,
    env_create: unsafe extern "C" fn(*mut *mut Env) -> c_int,
    env_set_mapsize: unsafe extern "C" fn(*mut Env, usize) -> c_int,
    env_open: unsafe extern "C" fn(*mut Env, *const c_char, c_uint, libc::mode_t) -> c_int,
    env_close: unsafe extern "C" fn(*mut Env),
    txn_begin: unsafe extern "C" fn(*mut Env, *mut Txn, c_uint, *mut *mut Txn) -> c_int,
    txn_commit: unsafe extern "C" fn(*mut Txn) -> c_int,
    txn_abort: unsafe extern "C" fn(*mut Txn),
    dbi_open: unsafe extern "C" fn(*mut Txn, *const c_char, c_uint, *mut c_uint) -> c_int,
    get: unsafe extern "C" fn(*mut Txn, c_uint, *mut MdbVal, *mut MdbVal) -> c_int,
    put: unsafe extern "C" fn(*mut Txn, c_uint, *mut MdbVal, *mut MdbVal, c_uint) -> c_int,
    del: unsafe extern "C" fn(*mut Txn, c_uint, *mut MdbVal, *mut MdbVal) -> c_int,
    cursor_open: unsafe extern "C" fn(*mut Txn, c_uint, *mut *mut Cursor) -> c_int,
    cursor_close: unsafe extern "C" fn(*mut Cursor),
    cursor_get: unsafe extern "C" fn(*mut Cursor, *mut MdbVal, *mut MdbVal, c_int) -> c_int,
}

impl Api {
    fn load() -> Result<Api, String> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never closed, so the
        // function pointers stay valid for the life of the process.
        unsafe {
            let handle = libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if handle.is_null() {
                return Err(format!(
                    "cannot load {} (the LMDB library Exim's lmdb lookup uses; Debian package liblmdb0)",
                    LIBRARY.to_string_lossy()
                ));
            }
            macro_rules! sym {
                ($name:literal) => {{
                    let p = libc::dlsym(handle, concat!($name, "\0").as_ptr() as *const c_char);
                    if p.is_null() {
                        return Err(format!("{} has no symbol {}", LIBRARY.to_string_lossy(), $name));
                    }
                    // The target type is the field's own, declared once in `Api`.
                    #[allow(clippy::missing_transmute_annotations)]
                    std::mem::transmute::<*mut c_void, _>(p)
                }};
            }
            Ok(Api {
                strerror: sym!("mdb_strerror"),
                env_create: sym!("mdb_env_create"),
                env_set_mapsize: sym!("mdb_env_set_mapsize"),
                env_open: sym!("mdb_env_open"),
                env_close: sym!("mdb_env_close"),
                txn_begin: sym!("mdb_txn_begin"),
                txn_commit: sym!("mdb_txn_commit"),
                txn_abort: sym!("mdb_txn_abort"),
                dbi_open: sym!("mdb_dbi_open"),
                get: sym!("mdb_get"),
                put: sym!("mdb_put"),
                del: sym!("mdb_del"),
                cursor_open: sym!("mdb_cursor_open"),
                cursor_close: sym!("mdb_cursor_close"),
                cursor_get: sym!("mdb_cursor_get"),
            })
        }
    }

    fn check(&self, what: &str, rc: c_int) -> Result<(), String> {
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: mdb_strerror returns a static NUL-terminated string for any code.
        let text = unsafe { CStr::from_ptr((self.strerror)(rc)) }.to_string_lossy().into_owned();
        Err(format!("{what}: {text}"))
    }
}

/// One environment holding the unnamed database, in Exim's `MDB_NOSUBDIR` layout (the data file
/// at the path, `path-lock` beside it).
pub struct SystemLmdb {
    api: Api,
    env: *mut Env,
}

// SAFETY: an LMDB environment may be shared between threads; every transaction here is a write
// transaction that begins and ends inside one call on one thread (LMDB serialises writers), and
// the function table is immutable after loading.
unsafe impl Send for SystemLmdb {}
unsafe impl Sync for SystemLmdb {}

impl SystemLmdb {
    /// Open (creating) the environment at `path` with a map of `map_size` bytes.
    pub fn open(path: &Path, map_size: usize) -> Result<SystemLmdb, String> {
        let api = Api::load()?;
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| "path contains NUL".to_string())?;
        let mut env = ptr::null_mut();
        // SAFETY: the calls follow lmdb.h: create, configure, open; on failure close.
        unsafe {
            api.check("mdb_env_create", (api.env_create)(&mut env))?;
            let opened = api
                .check("mdb_env_set_mapsize", (api.env_set_mapsize)(env, map_size))
                .and_then(|_| api.check("mdb_env_open", (api.env_open)(env, cpath.as_ptr(), MDB_NOSUBDIR, 0o640)));
            if let Err(e) = opened {
                (api.env_close)(env);
                return Err(e);
            }
        }
        let db = SystemLmdb { api, env };
        // The unnamed database exists from the start, so that Exim's first lookup finds it.
        db.write(|_, _| Ok(()))?;
        Ok(db)
    }

    /// Run `f` in one write transaction on the unnamed database and commit it; an error aborts it.
    fn write(&self, f: impl FnOnce(&Api, &mut WriteTxn) -> Result<(), String>) -> Result<(), String> {
        let api = &self.api;
        let mut txn = ptr::null_mut();
        // SAFETY: the transaction is committed or aborted before returning.
        unsafe {
            api.check("mdb_txn_begin", (api.txn_begin)(self.env, ptr::null_mut(), 0, &mut txn))?;
            let mut dbi = 0;
            let rc = (api.dbi_open)(txn, ptr::null(), MDB_CREATE, &mut dbi);
            if let Err(e) = api.check("mdb_dbi_open", rc) {
                (api.txn_abort)(txn);
                return Err(e);
            }
            let mut w = WriteTxn { txn, dbi };
            if let Err(e) = f(api, &mut w) {
                (api.txn_abort)(txn);
                return Err(e);
            }
            api.check("mdb_txn_commit", (api.txn_commit)(txn))
        }
    }

    /// Store every (key, value) pair in one transaction.
    pub fn put_all(&self, pairs: &[(&[u8], &[u8])]) -> Result<(), String> {
        self.write(|api, w| {
            for (k, v) in pairs {
                let (mut k, mut v) = (MdbVal::of(k), MdbVal::of(v));
                // SAFETY: the vals point at live slices for the call; LMDB copies them.
                api.check("mdb_put", unsafe { (api.put)(w.txn, w.dbi, &mut k, &mut v, 0) })?;
            }
            Ok(())
        })
    }

    /// Delete every key for which `stale(key, value)` holds; returns how many.
    pub fn delete_where(&self, stale: impl Fn(&[u8], &[u8]) -> bool) -> Result<usize, String> {
        let mut removed = 0;
        self.write(|api, w| {
            let mut doomed = Vec::new();
            // SAFETY: the cursor lives inside the transaction and is closed before it ends; the
            // vals it fills are copied out before the next cursor call.
            unsafe {
                let mut cursor = ptr::null_mut();
                api.check("mdb_cursor_open", (api.cursor_open)(w.txn, w.dbi, &mut cursor))?;
                let mut op = MDB_FIRST;
                loop {
                    let (mut k, mut v) = (MdbVal::empty(), MdbVal::empty());
                    let rc = (api.cursor_get)(cursor, &mut k, &mut v, op);
                    if rc == MDB_NOTFOUND {
                        break;
                    }
                    if let Err(e) = api.check("mdb_cursor_get", rc) {
                        (api.cursor_close)(cursor);
                        return Err(e);
                    }
                    let (key, value) = (k.to_vec(), v.to_vec());
                    if stale(&key, &value) {
                        doomed.push(key);
                    }
                    op = MDB_NEXT;
                }
                (api.cursor_close)(cursor);
                for key in &doomed {
                    let mut k = MdbVal::of(key);
                    api.check("mdb_del", (api.del)(w.txn, w.dbi, &mut k, ptr::null_mut()))?;
                }
            }
            removed = doomed.len();
            Ok(())
        })?;
        Ok(removed)
    }

    /// The value stored under `key`, read in a write transaction (we are the only writer, and a
    /// read here is for tests and tools, not the hot path).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut found = None;
        self.write(|api, w| {
            let (mut k, mut v) = (MdbVal::of(key), MdbVal::empty());
            // SAFETY: the value is copied out while the transaction is open.
            let rc = unsafe { (api.get)(w.txn, w.dbi, &mut k, &mut v) };
            if rc == MDB_NOTFOUND {
                return Ok(());
            }
            api.check("mdb_get", rc)?;
            found = Some(unsafe { v.to_vec() });
            Ok(())
        })?;
        Ok(found)
    }
}

struct WriteTxn {
    txn: *mut Txn,
    dbi: c_uint,
}

impl Drop for SystemLmdb {
    fn drop(&mut self) {
        // SAFETY: no transaction is open outside a method call.
        unsafe { (self.api.env_close)(self.env) }
    }
}
