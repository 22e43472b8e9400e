//! A plugin file with a custom section appended: a different file (a new
//! SHA-256, so a compile-cache miss and "a new version" to the host) that
//! behaves exactly like the original. Shared by the daemon tests and the
//! daemon benchmark.

/// `wasm` with a custom section `outreach-tag` holding `tag`.
pub fn tagged(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"outreach-tag";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // section id 0: custom
    let mut n = payload.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}
