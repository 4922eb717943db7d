#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detox_fuzz::check(data, "model.safetensors", detox_fuzz::readers::safetensors_header);
});
