use super::*;
use proptest::prelude::*;

#[test]
fn integers_bytes_and_strings_round_trip() {
    let mut out = vec![0xaa]; // a writer appends after what is there
    let mut w = Writer::new(&mut out);
    w.u8(7);
    w.bool(true);
    w.u16(0x1234);
    w.u32(0xdead_beef);
    w.u64(u64::MAX - 1);
    w.str_u8("site", "ab", 255).unwrap();
    w.str_u16("addr", "héllo", 100).unwrap();
    w.bytes_u32("payload", b"xyz", 3).unwrap();
    w.len_u16("ids", 2, 10).unwrap();
    assert_eq!(out[..4], [0xaa, 7, 1, 0x34]);
    let mut r = Reader::new(&out[1..], "test");
    assert_eq!(r.u8(), Ok(7));
    assert_eq!(r.bool(), Ok(true));
    assert_eq!(r.u16(), Ok(0x1234));
    assert_eq!(r.u32(), Ok(0xdead_beef));
    assert_eq!(r.u64(), Ok(u64::MAX - 1));
    assert_eq!(r.str_u8().as_deref(), Ok("ab"));
    assert_eq!(r.str_u16(100).as_deref(), Ok("héllo"));
    assert_eq!(r.bytes_u32(3), Ok(&b"xyz"[..]));
    assert_eq!(r.count_u16(10, 0), Ok(2));
    assert_eq!(r.position(), out.len() - 1);
    r.finish(()).unwrap();
}

#[test]
fn over_long_strings_and_lists_are_refused_not_cut() {
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    let long = "x".repeat(256);
    let err = w.str_u8("site", &long, 255).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLong {
                what: "site",
                len: 256,
                max: 255
            }
        ),
        "{err:?}"
    );
    let huge = "y".repeat(u16::MAX as usize + 1);
    // The limit asked for is capped by what the prefix can say.
    let err = w.str_u16("text", &huge, usize::MAX).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLong {
                len: 65_536,
                max: 65_535,
                ..
            }
        ),
        "{err:?}"
    );
    let err = w.len_u16("voter ids", 1025, 1024).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLong {
                len: 1025,
                max: 1024,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(w.bytes_u32("payload", b"abcd", 3).is_err());
    assert!(out.is_empty(), "nothing written for a refused value");
}

#[test]
fn truncated_input_is_refused_without_panic() {
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    w.u64(1);
    w.str_u16("s", "hello", 10).unwrap();
    for n in 0..out.len() {
        let mut r = Reader::new(&out[..n], "prefix");
        let got = r.u64().and_then(|_| r.str_u16(10));
        // Short for the integers and the length, a length over what is left for the text.
        assert!(
            matches!(
                got,
                Err(DecodeError::Short { .. } | DecodeError::TooMany { .. })
            ),
            "prefix {n}: {got:?}"
        );
    }
    let r = Reader::new(&[1, 2], "trailing");
    assert_eq!(
        r.finish(()),
        Err(DecodeError::Trailing {
            what: "trailing",
            left: 2
        })
    );
    assert!(matches!(
        Reader::new(&[2], "b").bool(),
        Err(DecodeError::Invalid { .. })
    ));
    assert!(matches!(
        Reader::new(&[2, 0xff, 0xfe], "utf8").str_u8(),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn huge_declared_lengths_are_refused_before_allocating() {
    // u32::MAX items declared with 4 bytes behind them: refused by count, nothing allocated.
    let b = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    let mut r = Reader::new(&b, "list");
    assert!(matches!(
        r.count_u32(usize::MAX, 8),
        Err(DecodeError::TooMany {
            count: 0xffff_ffff,
            ..
        })
    ));
    // Within what the input holds but over the limit.
    let mut r = Reader::new(&[3, 0, 1, 2, 3, 4, 5, 6], "list");
    assert!(matches!(
        r.count_u16(2, 1),
        Err(DecodeError::TooMany {
            count: 3,
            max: 2,
            ..
        })
    ));
    let mut r = Reader::new(&[0xff, 0xff, 0xff, 0x7f], "bytes");
    assert!(matches!(
        r.bytes_u32(usize::MAX),
        Err(DecodeError::TooMany { .. })
    ));
}

#[test]
fn clip_utf8_cuts_on_a_character_boundary() {
    assert_eq!(clip_utf8("héllo", 2), "h");
    assert_eq!(clip_utf8("héllo", 3), "hé");
    assert_eq!(clip_utf8("abc", 10), "abc");
}

proptest! {
    #[test]
    fn random_values_round_trip(
        a in any::<u8>(), b in any::<u16>(), c in any::<u32>(), d in any::<u64>(),
        flag in any::<bool>(),
        s in ".{0,40}",
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ids in proptest::collection::vec(any::<u64>(), 0..50),
    ) {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.u8(a);
        w.u16(b);
        w.u32(c);
        w.u64(d);
        w.bool(flag);
        w.str_u16("s", &s, 1000).unwrap();
        w.bytes_u32("bytes", &bytes, 300).unwrap();
        w.len_u16("ids", ids.len(), 50).unwrap();
        ids.iter().for_each(|&i| w.u64(i));
        let mut r = Reader::new(&out, "prop");
        prop_assert_eq!(r.u8(), Ok(a));
        prop_assert_eq!(r.u16(), Ok(b));
        prop_assert_eq!(r.u32(), Ok(c));
        prop_assert_eq!(r.u64(), Ok(d));
        prop_assert_eq!(r.bool(), Ok(flag));
        prop_assert_eq!(r.str_u16(1000), Ok(s));
        prop_assert_eq!(r.bytes_u32(300), Ok(&bytes[..]));
        let n = r.count_u16(50, 8).unwrap();
        let got: Vec<u64> = (0..n).map(|_| r.u64().unwrap()).collect();
        prop_assert_eq!(got, ids);
        prop_assert_eq!(r.finish(()), Ok(()));
    }

    #[test]
    fn random_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut r = Reader::new(&input, "fuzz");
        let _ = r.u8().and_then(|_| r.str_u16(16)).and_then(|_| r.count_u32(8, 8));
        let _ = Reader::new(&input, "fuzz").bytes_u32(1 << 20);
    }
}
