//! `.npy` files as `archc logits` writes them and the tests read them: the header bytes,
//! round trips, and every kind of bad file refused with its reason.

use archc_runtime::npy;
use std::fmt::Write as _;
use std::path::Path;

fn snapshot(name: &str, text: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/runtime");
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

// ---------------------------------------------------------------------------------------
// .npy
// ---------------------------------------------------------------------------------------

#[test]
fn npy_header_bytes_and_round_trip() {
    let bytes = npy::encode(&[2, 3], &[0.0, 1.0, -2.5, 3.25, 4.0, f32::MAX]).unwrap();
    let header =
        b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert_eq!(&bytes[..header.len()], header);
    assert_eq!(bytes.len(), 128 + 24);
    assert!(bytes[header.len()..127].iter().all(|&b| b == b' '));
    assert_eq!(bytes[127], b'\n');
    let one = npy::encode(&[5], &[1.0; 5]).unwrap();
    assert!(one.windows(6).any(|w| w == b"(5,), "));
    assert_eq!(one.len(), 128 + 20);

    // Byte for byte what numpy.save wrote for a fixture.
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures/llama/logits.npy");
    let numpy_bytes = std::fs::read(&fixture).unwrap();
    let a = npy::decode(&numpy_bytes).unwrap();
    assert_eq!(npy::encode(&a.shape, &a.data).unwrap(), numpy_bytes);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.npy");
    let values: Vec<f32> = (0..60).map(|i| i as f32 * 0.37 - 3.0).collect();
    npy::write(&path, &[3, 4, 5], &values).unwrap();
    let back = npy::read(&path).unwrap();
    assert_eq!(back.shape, [3, 4, 5]);
    assert_eq!(back.data, values);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["out.npy"]);
    // Writing into a missing directory fails and leaves nothing.
    assert!(npy::write(&dir.path().join("no/such/dir.npy"), &[1], &[1.0]).is_err());
    assert!(npy::encode(&[2, 2], &[1.0]).is_err());
}

#[test]
fn npy_reader_rejects_bad_files() {
    let good = npy::encode(&[2], &[1.0, 2.0]).unwrap();
    let with_header = |h: &str| {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&[0; 8]);
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short", b"\x93NUM".to_vec()),
        ("bad_magic", b"PK\x03\x04xxxxxxxxxxxx".to_vec()),
        ("truncated_data", good[..good.len() - 1].to_vec()),
        ("trailing_data", [good.clone(), vec![0]].concat()),
        ("header_past_end", {
            let mut b = good.clone();
            b[8] = 0xff;
            b[9] = 0xff;
            b
        }),
        ("version_9", {
            let mut b = good.clone();
            b[6] = 9;
            b
        }),
        (
            "big_endian",
            with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n"),
        ),
        (
            "fortran",
            with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }\n"),
        ),
        (
            "missing_shape",
            with_header("{'descr': '<f4', 'fortran_order': False, }\n"),
        ),
        (
            "bad_dim",
            with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (x,), }\n"),
        ),
        (
            "overflow",
            with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 8), }\n",
            ),
        ),
    ];
    let mut out = String::new();
    for (name, bytes) in &cases {
        let msg = match npy::decode(bytes) {
            Ok(a) => format!("decoded {:?}", a.shape),
            Err(e) => e.to_string(),
        };
        writeln!(out, "{name}:\n  {msg}").unwrap();
    }
    // A float64 file as numpy writes it is accepted and converted.
    let f8 = {
        let mut b = with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }\n");
        b.truncate(b.len() - 8);
        b.extend_from_slice(&0.5f64.to_le_bytes());
        b
    };
    assert_eq!(npy::decode(&f8).unwrap().data, [0.5]);
    snapshot("npy_errors", &out);
}
