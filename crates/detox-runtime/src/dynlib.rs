//! The process's shared libraries, reached without linking them: opening one, looking up its C entry points,
//! and finding where one was loaded from. The CUDA backend, the driver's device names and the runtime's memory
//! query all go through here.

use std::ffi::{c_int, c_void, CString};
use std::path::PathBuf;

/// Opens `library` (a file name searched the usual way, or a path) with the `dlopen` `flags`; `None` when it
/// cannot be opened.
pub(crate) fn open(library: &str, flags: c_int) -> Option<*mut c_void> {
    let name = CString::new(library).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string; dlopen has no other preconditions.
    let handle = unsafe { libc::dlopen(name.as_ptr(), flags) };
    (!handle.is_null()).then_some(handle)
}

/// The entry point `name` of the library `handle`, as the function-pointer type `T`, which must be the exact C
/// signature of that entry point.
pub(crate) fn symbol<T>(handle: *mut c_void, name: &str) -> Option<T> {
    let name = CString::new(name).ok()?;
    // SAFETY: valid handle and NUL-terminated name.
    let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
    // SAFETY: the caller names the exact C signature of the entry point in `T`.
    (!address.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, T>(&address) })
}

/// The path of the first library mapped into the process whose file name satisfies `matches`, read from the
/// process's memory map (Linux; `None` elsewhere).
pub(crate) fn loaded_library(matches: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().filter_map(|line| line.split_whitespace().nth(5)).find_map(|path| {
        let path = std::path::Path::new(path);
        path.file_name()?.to_str().filter(|name| matches(name)).map(|_| path.to_path_buf())
    })
}
