//! How a symbol's name is shown: demangled, and by default short, the way perf
//! and samply show functions.
//!
//! The rule, the same for every output format: a C++ name loses its parameter
//! list and return type (`node::LoadEnvironment(node::Environment*, …)` becomes
//! `node::LoadEnvironment`); template arguments are kept, as perf keeps them, so
//! `demo::Worker<unsigned long>::spin` still says which instantiation ran. A Rust
//! name loses its hash (`…::crunch::h0123456789abcdef` becomes `…::crunch`).
//! Names that are not mangled (C, the kernel, JIT maps) stay as they are. Full
//! names keep everything the demangler gives.
//!
//! blazesym demangles too, but always in full; it is asked for the mangled name
//! and demangling happens here, with cpp_demangle's and rustc-demangle's own
//! options, rather than cutting parameter lists out of demangled text (where
//! `(anonymous namespace)`, lambdas and `operator()` make parentheses ambiguous).

use std::borrow::Cow;

/// Demangles `name` if it is a Rust or C++ symbol; `full` keeps parameter lists,
/// return types and Rust hashes.
pub fn demangle(name: &str, full: bool) -> Cow<'_, str> {
    // Rust first: legacy Rust symbols are valid Itanium C++ names too, and the C++
    // demangler would keep their hash as a path component.
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return Cow::Owned(if full {
            rust.to_string()
        } else {
            format!("{rust:#}")
        });
    }
    if !name.starts_with("_Z") {
        return Cow::Borrowed(name);
    }
    let Ok(symbol) = cpp_demangle::Symbol::new(name) else {
        return Cow::Borrowed(name);
    };
    let options = if full {
        cpp_demangle::DemangleOptions::new()
    } else {
        cpp_demangle::DemangleOptions::new()
            .no_params()
            .no_return_type()
    };
    match symbol.demangle_with_options(&options) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cxx_names_lose_parameters_and_keep_templates() {
        // demo::Worker<unsigned long>::spin(unsigned long)
        let spin = "_ZN4demo6WorkerImE4spinEm";
        assert_eq!(demangle(spin, false), "demo::Worker<unsigned long>::spin");
        assert_eq!(
            demangle(spin, true),
            "demo::Worker<unsigned long>::spin(unsigned long)"
        );
        // overloads share one short name
        assert_eq!(demangle("_Z4workd", false), "work");
        assert_eq!(demangle("_Z4worki", false), "work");
        assert_eq!(demangle("_Z4worki", true), "work(int)");
    }

    #[test]
    fn a_template_function_loses_its_return_type() {
        // int demo::add<int>(int, int)
        let add = "_ZN4demo3addIiEET_S1_S1_";
        assert_eq!(demangle(add, false), "demo::add<int>");
        assert_eq!(demangle(add, true), "int demo::add<int>(int, int)");
    }

    #[test]
    fn rust_names_lose_their_hash_unless_full() {
        let legacy = "_ZN8rustwork6engine6Engine6crunch17h0123456789abcdefE";
        assert_eq!(demangle(legacy, false), "rustwork::engine::Engine::crunch");
        assert_eq!(
            demangle(legacy, true),
            "rustwork::engine::Engine::crunch::h0123456789abcdef"
        );
    }

    #[test]
    fn plain_and_unparseable_names_stay_as_they_are() {
        assert_eq!(demangle("main", false), "main");
        assert_eq!(demangle("_start", false), "_start");
        assert_eq!(demangle("_Z3fo", false), "_Z3fo", "truncated");
        assert_eq!(
            demangle("LazyCompile:*fib /x.js:1", false),
            "LazyCompile:*fib /x.js:1"
        );
    }
}
