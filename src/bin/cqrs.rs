//! The `cqrs` command (feature `cli`): a replica with no code, and django-cqrs's operations.
//! `cqrs --help` lists the commands; the README's "Command line" section shows each.

fn main() {
    cqrs_sync::cli::main();
}
