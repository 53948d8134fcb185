//! Fuzz target `protobuf`: see `tailgate_fuzz::protobuf` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: tailgate_fuzz::CountingAlloc = tailgate_fuzz::CountingAlloc;

fuzz_target!(|data: &[u8]| {
    tailgate_fuzz::protobuf(data);
});
