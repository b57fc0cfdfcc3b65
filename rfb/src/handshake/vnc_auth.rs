//! VNC authentication's challenge response ([rfbproto: VNC Authentication]).
//!
//! The server sends a 16-byte random challenge; the client encrypts it with DES
//! in ECB mode (two 8-byte blocks) and sends the result back. The key is the
//! password's first 8 bytes, zero-padded, with the bits of every byte reversed:
//! the original implementation fed the key to a DES routine that numbered bits
//! from the other end, and every implementation since has matched it.
//!
//! [rfbproto: VNC Authentication]: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst#vnc-authentication

use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use des::Des;

/// Size of the challenge and of the response.
pub const CHALLENGE_SIZE: usize = 16;

/// The DES key VNC authentication derives from `password`: its first 8 bytes
/// (zero-padded), each bit-reversed. Longer passwords are cut.
pub fn des_key(password: &[u8]) -> [u8; 8] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    key
}

/// The response to `challenge` for `password`.
pub fn challenge_response(
    password: &[u8],
    challenge: &[u8; CHALLENGE_SIZE],
) -> [u8; CHALLENGE_SIZE] {
    let cipher = Des::new(&des_key(password).into());
    let mut response = *challenge;
    for block in response.chunks_exact_mut(8) {
        // INVARIANT: chunks_exact_mut(8) yields 8-byte slices, DES's block size,
        // which is all from_mut_slice requires.
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    response
}

/// The key VNC servers and `vncpasswd` obscure stored passwords with (d3des's
/// `fixedkey` 23 82 107 6 35 78 88 7), with each byte's bits reversed as VNC's DES
/// variant reverses them.
const PASSWORD_FILE_KEY: [u8; 8] = [0xe8, 0x4a, 0xd6, 0x60, 0xc4, 0x72, 0x1a, 0xe0];

/// Reads a password stored by `vncpasswd` (TigerVNC, TightVNC, RealVNC 4): the first
/// 8 bytes are the password, DES-encrypted with a fixed key, zero-padded. Returns
/// `None` when `bytes` is too short to be one.
pub fn decode_password_file(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut block: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let cipher = Des::new(&PASSWORD_FILE_KEY.into());
    cipher.decrypt_block(GenericArray::from_mut_slice(&mut block));
    let len = block.iter().position(|&b| b == 0).unwrap_or(8);
    Some(block[..len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_files_from_vncpasswd() {
        // `printf 'password\n' | vncpasswd -f | xxd -p` (TigerVNC 1.12) → dbd83cfd727a1458
        let file = [0xdb, 0xd8, 0x3c, 0xfd, 0x72, 0x7a, 0x14, 0x58];
        assert_eq!(
            decode_password_file(&file).as_deref(),
            Some(&b"password"[..])
        );
        // `printf 'kvm\n' | vncpasswd -f` → f02e5e9c9260920d
        let file = [0xf0, 0x2e, 0x5e, 0x9c, 0x92, 0x60, 0x92, 0x0d];
        assert_eq!(decode_password_file(&file).as_deref(), Some(&b"kvm"[..]));
        assert_eq!(decode_password_file(&file[..7]), None);
    }

    /// Challenge bytes 00 01 02 … 0f.
    const CHALLENGE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    // Expected values computed independently of this code:
    //   key: python3 -c "print(bytes(int('{:08b}'.format(b)[::-1], 2)
    //                      for b in b'password'.ljust(8, b'\0')[:8]).hex())"
    //        → 0e86ceceeef64e26   ("kvm" → d66eb60000000000, "longpass" → 36f676e60e86cece)
    //   response: printf '\x00\x01…\x0f' > chal.bin;
    //             openssl enc -des-ecb -provider legacy -provider default \
    //                 -K <key> -nopad -in chal.bin | xxd -p
    const PASSWORD_RESPONSE: &str = "b866924125c8eebb9debc1db61c538e2";
    const KVM_RESPONSE: &str = "071c900facb3f8c414cb2d25734e7976";
    const LONGPASS_RESPONSE: &str = "5931256585fd62106d317e09fc963baf";

    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn key_bits_are_reversed_and_padded() {
        assert_eq!(hex(&des_key(b"password")), "0e86ceceeef64e26");
        assert_eq!(hex(&des_key(b"kvm")), "d66eb60000000000");
        assert_eq!(hex(&des_key(b"")), "0000000000000000");
    }

    #[test]
    fn response_matches_openssl() {
        assert_eq!(
            hex(&challenge_response(b"password", &CHALLENGE)),
            PASSWORD_RESPONSE
        );
        assert_eq!(hex(&challenge_response(b"kvm", &CHALLENGE)), KVM_RESPONSE);
    }

    #[test]
    fn only_eight_bytes_count() {
        assert_eq!(
            hex(&challenge_response(b"longpassword12", &CHALLENGE)),
            LONGPASS_RESPONSE
        );
        assert_eq!(
            hex(&challenge_response(b"longpass", &CHALLENGE)),
            LONGPASS_RESPONSE
        );
    }
}
