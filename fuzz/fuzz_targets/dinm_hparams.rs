#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detox_fuzz::check(data, "hparams.yaml", detox_fuzz::readers::dinm_hparams);
});
