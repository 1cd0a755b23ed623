//! The kernel's BTF cut down to what the BPF object reads through CO-RE, kept
//! per kernel and object in a cache and handed to libbpf (`btf_custom_path`).
//!
//! For each kernel struct the object declares (bpf/kernel.h: task_struct,
//! signal_struct, pt_regs, vm_area_struct, …), libbpf searches all of the
//! kernel's 100,000+ types for candidates, at every start: 9 ms of a 66 ms
//! `record -p`. The object's own declarations name exactly the members it
//! reads, so the subset holds those structs with those members only, at the
//! kernel's offsets, through the kernel's anonymous structs and unions, which
//! is what libbpf's matching needs (bpftool's `gen min_core_btf` does the same
//! from the relocations). It is made once, after a load against the whole
//! kernel BTF, and used from the next start on; a load that fails with it is
//! retried without it, and the file is dropped.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::btf::types::{Composite, MemberAttr};
use libbpf_rs::btf::{BtfKind, BtfType, TypeId};
use libbpf_rs::libbpf_sys;
use libbpf_rs::{Btf, HasSize};

/// A cached subset larger than this is not ours: a few dozen types take 1 KiB.
const MAX_SUBSET: u64 = 1 << 20;

/// The subset's file for this kernel and BPF object in `dir`: named by the
/// kernel's build id and BTF size and by a hash of the object, so another
/// kernel or another build of flamebpf never reads it.
pub fn path_in(dir: &Path, object_hash: &str) -> Option<PathBuf> {
    let btf = std::fs::metadata("/sys/kernel/btf/vmlinux").ok()?;
    let kernel = kernel_build_id().unwrap_or_else(|| {
        // SAFETY: utsname is plain data, filled by uname.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a utsname.
        unsafe { libc::uname(&mut u) };
        let field = |f: &[libc::c_char]| -> String {
            f.iter()
                .take_while(|&&c| c != 0)
                .map(|&c| {
                    let b = c as u8;
                    if b.is_ascii_alphanumeric() {
                        b as char
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        format!("{}-{}", field(&u.release), field(&u.version))
    });
    Some(dir.join(format!("{kernel}-{}-{object_hash}.btf", btf.len())))
}

/// The running kernel's GNU build id, from /sys/kernel/notes.
fn kernel_build_id() -> Option<String> {
    let notes = std::fs::read("/sys/kernel/notes").ok()?;
    symbolizer::buildid::find_build_id(&notes).map(|id| symbolizer::debuginfod::hex(&id))
}

/// Whether `path` holds a subset to hand libbpf: a regular file of sane size
/// that this user wrote (what it says decides which kernel fields are read).
pub fn usable(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_file() && m.len() <= MAX_SUBSET && m.uid() == me)
}

/// Writes the subset of `kernel` that `local` (the object's BTF) reads to
/// `path`, atomically. The temporary file comes first: where the cache cannot be
/// written, the kernel's BTF is not read for nothing at every start.
pub fn store(
    local: &Btf<'_>,
    kernel: impl FnOnce() -> Result<Btf<'static>>,
    path: &Path,
) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().ok_or_else(|| anyhow!("no directory"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = kernel()
        .and_then(|k| subset(local, &k))
        .and_then(|raw| {
            file.write_all(&raw)
                .with_context(|| format!("writing {}", tmp.display()))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
        });
    if written.is_err() {
        // a full disk leaves no half-written file behind
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The raw BTF of the kernel's types that `local` declares, cut to the members
/// it declares.
pub fn subset(local: &Btf<'_>, kernel: &Btf<'_>) -> Result<Vec<u8>> {
    // the object's structs and unions by essential name (flavours such as
    // pt_regs___k join their kernel type's other declarations)
    let mut roots: HashMap<Vec<u8>, Vec<Composite<'_>>> = HashMap::new();
    for id in 1..local.len() {
        let Some(t) = local.type_by_id::<BtfType<'_>>(TypeId::from(id as u32)) else {
            continue;
        };
        let Some(name) = t.name().filter(|n| !n.is_empty()) else {
            continue;
        };
        if let Ok(c) = Composite::try_from(t) {
            roots.entry(essential(name).to_vec()).or_default().push(c);
        }
    }
    let mut out = Writer::new()?;
    for kid in 1..kernel.len() {
        let Some(t) = kernel.type_by_id::<BtfType<'_>>(TypeId::from(kid as u32)) else {
            continue;
        };
        let Some(locals) = t.name().and_then(|n| roots.get(n.as_bytes())) else {
            continue;
        };
        if let Ok(k) = Composite::try_from(t) {
            if out.done.contains_key(&t.type_id()) {
                continue;
            }
            out.composite(locals, k, kernel, local)?;
        }
    }
    out.raw()
}

/// A type's name without a CO-RE flavour (`___suffix`).
fn essential(name: &OsStr) -> &[u8] {
    let b = name.as_bytes();
    match b.windows(3).position(|w| w == b"___") {
        Some(i) => &b[..i],
        None => b,
    }
}

/// A BTF being written through libbpf's builder.
struct Writer {
    btf: *mut libbpf_sys::btf,
    /// Kernel named composites already written, by kernel type id.
    done: HashMap<TypeId, i32>,
    /// Integers written, by name, size and encoding.
    ints: HashMap<(Vec<u8>, usize, u32), i32>,
}

impl Writer {
    fn new() -> Result<Writer> {
        // SAFETY: no preconditions; checked for NULL.
        let btf = unsafe { libbpf_sys::btf__new_empty() };
        if btf.is_null() {
            bail!("libbpf could not make an empty BTF");
        }
        Ok(Writer {
            btf,
            done: HashMap::new(),
            ints: HashMap::new(),
        })
    }

    fn raw(&self) -> Result<Vec<u8>> {
        let mut size = 0u32;
        // SAFETY: a live BTF; libbpf returns a buffer of `size` bytes it owns.
        let data = unsafe { libbpf_sys::btf__raw_data(self.btf, &mut size) };
        if data.is_null() {
            bail!("libbpf could not encode the BTF");
        }
        // SAFETY: as above; copied before the BTF changes or is freed.
        Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size as usize) }.to_vec())
    }

    fn check(id: i32, what: &str) -> Result<i32> {
        if id < 0 {
            bail!("libbpf refused {what} ({id})");
        }
        Ok(id)
    }

    /// Writes kernel composite `k` with the members the `locals` declare;
    /// None when it would hold none.
    fn composite(
        &mut self,
        locals: &[Composite<'_>],
        k: Composite<'_>,
        kernel: &Btf<'_>,
        local: &Btf<'_>,
    ) -> Result<Option<i32>> {
        if let Some(&id) = self.done.get(&k.type_id()) {
            return Ok(Some(id));
        }
        let mut fields: Vec<(Option<CString>, i32, u32, u32)> = Vec::new();
        for m in k.iter() {
            let (offset, bits) = match m.attr {
                MemberAttr::Normal { offset } => (offset, 0),
                MemberAttr::BitField { size, offset } => (offset, u32::from(size)),
            };
            let Some(kt) = kernel.type_by_id::<BtfType<'_>>(m.ty) else {
                continue;
            };
            let kt = kt.skip_mods_and_typedefs();
            match m.name.filter(|n| !n.is_empty()) {
                // an anonymous struct or union: what it holds of the locals'
                // members, at its place
                None => {
                    if let Ok(inner) = Composite::try_from(kt) {
                        if let Some(id) = self.composite(locals, inner, kernel, local)? {
                            fields.push((None, id, offset, bits));
                        }
                    }
                }
                Some(name) => {
                    let wanted = locals
                        .iter()
                        .flat_map(|l| l.iter())
                        .find(|lm| lm.name == Some(name));
                    let Some(lm) = wanted else { continue };
                    let Some(lt) = local.type_by_id::<BtfType<'_>>(lm.ty) else {
                        continue;
                    };
                    if let Some(id) =
                        self.member_type(lt.skip_mods_and_typedefs(), kt, kernel, local)?
                    {
                        fields.push((Some(cstring(name.as_bytes())?), id, offset, bits));
                    }
                }
            }
        }
        if fields.is_empty() {
            return Ok(None);
        }
        let name = match k.name().filter(|n| !n.is_empty()) {
            Some(n) => Some(cstring(n.as_bytes())?),
            None => None,
        };
        let name_ptr = name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr());
        let size = k.size() as u32;
        // SAFETY: a live BTF and a NUL-terminated name or NULL.
        let id = unsafe {
            if k.is_struct {
                libbpf_sys::btf__add_struct(self.btf, name_ptr, size)
            } else {
                libbpf_sys::btf__add_union(self.btf, name_ptr, size)
            }
        };
        let id = Self::check(id, "a struct")?;
        for (fname, ty, offset, bits) in &fields {
            let fptr = fname.as_ref().map_or(std::ptr::null(), |n| n.as_ptr());
            // SAFETY: the composite just added is the last type, as
            // btf__add_field requires.
            let r = unsafe { libbpf_sys::btf__add_field(self.btf, fptr, *ty, *offset, *bits) };
            Self::check(r, "a member")?;
        }
        if k.name().is_some_and(|n| !n.is_empty()) {
            self.done.insert(k.type_id(), id);
        }
        Ok(Some(id))
    }

    /// An integer type, written once.
    fn int(&mut self, name: &[u8], size: usize, encoding: u32) -> Result<i32> {
        let key = (name.to_vec(), size, encoding);
        if let Some(&id) = self.ints.get(&key) {
            return Ok(id);
        }
        let cname = cstring(name)?;
        // SAFETY: a live BTF and a NUL-terminated name.
        let id = unsafe {
            libbpf_sys::btf__add_int(self.btf, cname.as_ptr(), size as u64, encoding as i32)
        };
        let id = Self::check(id, "an integer")?;
        self.ints.insert(key, id);
        Ok(id)
    }

    /// The type of a member the local declares as `lt`, the kernel as `kt`
    /// (both without typedefs and modifiers); None when they do not match, as
    /// libbpf would find too.
    fn member_type(
        &mut self,
        lt: BtfType<'_>,
        kt: BtfType<'_>,
        kernel: &Btf<'_>,
        local: &Btf<'_>,
    ) -> Result<Option<i32>> {
        use libbpf_rs::btf::types::{Array, Int, IntEncoding};
        match kt.kind() {
            BtfKind::Struct | BtfKind::Union => {
                let (Ok(l), Ok(k)) = (Composite::try_from(lt), Composite::try_from(kt)) else {
                    return Ok(None);
                };
                self.composite(&[l], k, kernel, local)
            }
            // what a pointer points to is not matched: a pointer to void
            BtfKind::Ptr => {
                // SAFETY: a live BTF; type 0 is void.
                let id = unsafe { libbpf_sys::btf__add_ptr(self.btf, 0) };
                Self::check(id, "a pointer").map(Some)
            }
            BtfKind::Int => {
                let Ok(int) = Int::try_from(kt) else {
                    return Ok(None);
                };
                let encoding = match int.encoding {
                    IntEncoding::Signed => libbpf_sys::BTF_INT_SIGNED,
                    IntEncoding::Char => libbpf_sys::BTF_INT_CHAR,
                    IntEncoding::Bool => libbpf_sys::BTF_INT_BOOL,
                    IntEncoding::None => 0,
                };
                let name = kt.name().map_or(&b"int"[..], |n| n.as_bytes());
                self.int(name, int.size(), encoding).map(Some)
            }
            BtfKind::Array => {
                let (Ok(la), Ok(ka)) = (Array::try_from(lt), Array::try_from(kt)) else {
                    return Ok(None);
                };
                let (Some(le), Some(ke)) = (
                    local.type_by_id::<BtfType<'_>>(la.ty()),
                    kernel.type_by_id::<BtfType<'_>>(ka.ty()),
                ) else {
                    return Ok(None);
                };
                let Some(elem) = self.member_type(
                    le.skip_mods_and_typedefs(),
                    ke.skip_mods_and_typedefs(),
                    kernel,
                    local,
                )?
                else {
                    return Ok(None);
                };
                let index = self.int(b"unsigned int", 4, 0)?;
                // SAFETY: a live BTF and two of its type ids.
                let id = unsafe {
                    libbpf_sys::btf__add_array(self.btf, index, elem, ka.capacity() as u32)
                };
                Self::check(id, "an array").map(Some)
            }
            // enums, floats and the rest: not in what the object declares
            _ => Ok(None),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // SAFETY: made by btf__new_empty, freed once.
        unsafe { libbpf_sys::btf__free(self.btf) };
    }
}

fn cstring(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| anyhow!("a BTF name with a NUL"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::skel::ProfileSkelBuilder;
    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    use libbpf_rs::AsRawLibbpf;
    use std::mem::MaybeUninit;

    /// The bit offset of `path` (member names) in struct `root` of `btf`, through
    /// anonymous members, as CO-RE finds a field.
    fn offset(btf: &Btf<'_>, root: &str, path: &[&str]) -> Option<u32> {
        fn find(btf: &Btf<'_>, c: Composite<'_>, name: &str) -> Option<(u32, TypeId)> {
            for m in c.iter() {
                let off = match m.attr {
                    MemberAttr::Normal { offset } | MemberAttr::BitField { offset, .. } => offset,
                };
                let t = btf
                    .type_by_id::<BtfType<'_>>(m.ty)?
                    .skip_mods_and_typedefs();
                match m.name.filter(|n| !n.is_empty()) {
                    Some(n) if n == name => return Some((off, m.ty)),
                    None => {
                        if let Ok(inner) = Composite::try_from(t) {
                            if let Some((o, ty)) = find(btf, inner, name) {
                                return Some((off + o, ty));
                            }
                        }
                    }
                    _ => {}
                }
            }
            None
        }
        let mut c: Composite<'_> = btf
            .type_by_name::<libbpf_rs::btf::types::Struct<'_>>(root)?
            .into();
        let mut total = 0;
        for (i, name) in path.iter().enumerate() {
            let (off, ty) = find(btf, c, name)?;
            total += off;
            if i + 1 < path.len() {
                c = Composite::try_from(
                    btf.type_by_id::<BtfType<'_>>(ty)?.skip_mods_and_typedefs(),
                )
                .ok()?;
            }
        }
        Some(total)
    }

    #[test]
    fn the_subset_places_every_field_the_object_reads_where_the_kernel_does() {
        let Ok(kernel) = Btf::from_vmlinux() else {
            eprintln!("no kernel BTF on this machine: the subset is not tested");
            return;
        };
        let mut storage = MaybeUninit::uninit();
        let open = ProfileSkelBuilder::default().open(&mut storage).unwrap();
        let obj = open.open_object().as_libbpf_object();
        // SAFETY: the open object, alive for the test.
        let local = Btf::from_bpf_object(unsafe { obj.as_ref() })
            .unwrap()
            .unwrap();
        let raw = subset(&local, &kernel).unwrap();
        assert!(raw.len() < 8192, "a subset of {} bytes", raw.len());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("subset.btf");
        std::fs::write(&file, &raw).unwrap();
        let sub = Btf::from_path(&file).unwrap();
        // what bpf/kernel.h declares and the programs read
        for (root, path) in [
            ("task_struct", &["tgid"][..]),
            ("task_struct", &["flags"]),
            ("task_struct", &["__state"]),
            ("task_struct", &["comm"]),
            ("task_struct", &["signal"]),
            ("task_struct", &["thread", "fsbase"]),
            ("signal_struct", &["live", "counter"]),
            ("pt_regs", &["ip"]),
            ("pt_regs", &["sp"]),
            ("pt_regs", &["bp"]),
            ("vm_area_struct", &["vm_end"]),
        ] {
            let want = offset(&kernel, root, path);
            assert!(want.is_some(), "{root}.{path:?} is in the kernel");
            assert_eq!(offset(&sub, root, path), want, "{root}.{path:?}");
        }
        // and nothing the object does not declare
        assert_eq!(offset(&sub, "task_struct", &["mm"]), None);
        assert!(offset(&kernel, "task_struct", &["mm"]).is_some());
    }

    #[test]
    fn the_running_kernel_has_a_build_id_to_name_the_subset_by() {
        // kernels built with a build id (Debian's, this one) name the file by
        // it; where /sys/kernel/notes is absent the uname fallback applies
        if std::path::Path::new("/sys/kernel/notes").exists() {
            let id = kernel_build_id().expect("a GNU build id in /sys/kernel/notes");
            assert!(
                id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
        }
    }

    #[test]
    fn flavours_join_their_kernel_type() {
        assert_eq!(essential(OsStr::new("pt_regs___k")), b"pt_regs");
        assert_eq!(essential(OsStr::new("bpf_iter__task")), b"bpf_iter__task");
    }
}
