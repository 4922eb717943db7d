#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detox_fuzz::check(data, "config.json", detox_fuzz::readers::hf_config);
});
