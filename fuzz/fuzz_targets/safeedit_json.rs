#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detox_fuzz::check(data, "split.json", detox_fuzz::readers::safeedit_json);
});
