#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detox_fuzz::check(data, "tokenizer.json", detox_fuzz::readers::tokenizer_json);
});
