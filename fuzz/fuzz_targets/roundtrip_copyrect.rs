#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rfb::fuzzing::run("roundtrip_copyrect", data);
});
