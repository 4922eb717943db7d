#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detox_fuzz::check(data, "model.gguf", detox_fuzz::readers::gguf);
});
