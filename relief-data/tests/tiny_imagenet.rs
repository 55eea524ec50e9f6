//! Tiny-ImageNet: official layout, sorted-wnid labels, parallel JPEG decoding, the safetensors
//! cache (hit, invalidation when the listing changes) and errors naming the file.

mod common;

use std::path::Path;

use relief_data::tiny_imagenet::{list, load_tiny_imagenet_detailed};
use relief_data::{load_tiny_imagenet, CacheOutcome, DataError, Dataset, DatasetKind, TinyImageNetOptions};
use tch::Kind;

const NO_CACHE: TinyImageNetOptions = TinyImageNetOptions { cache: false };

fn mean_rgb(images: &tch::Tensor, i: i64) -> [f64; 3] {
    let m = images.get(i).to_kind(Kind::Float).mean_dim(&[1i64, 2][..], false, Kind::Float);
    let v = Vec::<f32>::try_from(m).unwrap();
    [v[0] as f64, v[1] as f64, v[2] as f64]
}

fn close(a: [f64; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y as f64).abs() < 3.0)
}

#[test]
fn loads_official_layout_with_sorted_wnid_labels() {
    let top = tempfile::tempdir().unwrap();
    common::write_tiny(&top.path().join("tiny-imagenet-200"), 3);
    for dir in [top.path().to_path_buf(), top.path().join("tiny-imagenet-200")] {
        let d = load_tiny_imagenet(&dir, &NO_CACHE).unwrap();
        assert_eq!(d.kind, DatasetKind::TinyImageNet);
        assert_eq!(d.classes, 3);
        assert_eq!(d.train.images.size(), vec![9, 3, 64, 64]);
        assert_eq!(d.test.images.size(), vec![4, 3, 64, 64]);
        assert_eq!(Vec::<i64>::try_from(&d.train.labels).unwrap(), vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
        // val annotations: n01, n03, n02, n01 -> sorted indices 0, 2, 1, 0
        assert_eq!(Vec::<i64>::try_from(&d.test.labels).unwrap(), vec![0, 2, 1, 0]);
        for i in 0..9 {
            assert!(close(mean_rgb(&d.train.images, i), common::class_colour(i as usize / 3)), "train {i}");
        }
        assert!(close(mean_rgb(&d.test.images, 1), common::class_colour(2)));
        d.validate().unwrap();
    }
}

#[test]
fn greyscale_jpegs_become_rgb() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path();
    common::write_tiny(root, 1);
    common::write_grey_jpeg(&root.join("train/n02/images/n02_0.JPEG"), 77);
    let d = load_tiny_imagenet(root, &NO_CACHE).unwrap();
    let m = mean_rgb(&d.train.images, 1);
    assert!(m.iter().all(|v| (v - 77.0).abs() < 2.0), "{m:?}");
}

#[test]
fn cache_is_written_read_and_invalidated() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path();
    common::write_tiny(root, 2);
    let opts = TinyImageNetOptions::default();
    let (first, outcome) = load_tiny_imagenet_detailed(root, &opts).unwrap();
    let CacheOutcome::Written(cache) = outcome else { panic!("expected a written cache, got {outcome:?}") };
    assert!(cache.starts_with(root) && cache.is_file());
    assert!(!root.read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));

    // Same listing: the cache is used, no JPEG is decoded. Prove it by corrupting a JPEG while
    // keeping its size and modification time (the listing) unchanged.
    let victim = root.join("train/n01/images/n01_0.JPEG");
    let meta = std::fs::metadata(&victim).unwrap();
    std::fs::write(&victim, vec![0u8; meta.len() as usize]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    let (second, outcome) = load_tiny_imagenet_detailed(root, &opts).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit(cache.clone()));
    assert!(second.train.images.equal(&first.train.images));
    assert!(second.test.labels.equal(&first.test.labels));
    assert_eq!(second.classes, 3);

    // The listing changes (a new image): the cache is stale, the JPEGs are decoded again and
    // the corrupted one is reported.
    common::write_jpeg(&root.join("train/n03/images/n03_9.JPEG"), [1, 2, 3], 64);
    let e = load_tiny_imagenet_detailed(root, &opts).unwrap_err();
    assert!(matches!(e, DataError::Image { .. }), "{e}");
    assert!(e.to_string().contains("n01_0.JPEG: unreadable image"), "{e}");

    // Repaired: rebuilt under a new name, the stale cache removed.
    common::write_jpeg(&victim, common::class_colour(0), 64);
    let (third, outcome) = load_tiny_imagenet_detailed(root, &opts).unwrap();
    let CacheOutcome::Written(new_cache) = outcome else {
        panic!("expected a rebuilt cache, got {outcome:?}")
    };
    assert_ne!(new_cache, cache);
    assert!(!cache.exists());
    assert_eq!(third.train.len(), 7);
}

#[test]
fn listing_fingerprint_tracks_files() {
    let top = tempfile::tempdir().unwrap();
    common::write_tiny(top.path(), 1);
    let a = list(top.path()).unwrap();
    let b = list(top.path()).unwrap();
    assert_eq!(a.fingerprint, b.fingerprint);
    std::fs::rename(top.path().join("val/images/val_3.JPEG"), top.path().join("val/images/val_9.JPEG"))
        .unwrap();
    let ann = std::fs::read_to_string(top.path().join("val/val_annotations.txt")).unwrap();
    std::fs::write(top.path().join("val/val_annotations.txt"), ann.replace("val_3", "val_9")).unwrap();
    assert_ne!(list(top.path()).unwrap().fingerprint, a.fingerprint);
}

fn err(root: &Path) -> String {
    load_tiny_imagenet(root, &NO_CACHE).unwrap_err().to_string()
}

#[test]
fn unreadable_jpeg_names_the_file() {
    let top = tempfile::tempdir().unwrap();
    common::write_tiny(top.path(), 1);
    std::fs::write(top.path().join("val/images/val_2.JPEG"), b"\xff\xd8\xff garbage").unwrap();
    let e = load_tiny_imagenet(top.path(), &NO_CACHE).unwrap_err();
    assert!(matches!(e, DataError::Image { .. }), "{e}");
    assert!(e.to_string().contains("val_2.JPEG: unreadable image"), "{e}");
}

#[test]
fn image_of_the_wrong_size() {
    let top = tempfile::tempdir().unwrap();
    common::write_tiny(top.path(), 1);
    common::write_jpeg(&top.path().join("train/n03/images/n03_0.JPEG"), [9, 9, 9], 32);
    let msg = err(top.path());
    assert!(msg.contains("n03_0.JPEG: image is 32x32, expected 64x64"), "{msg}");
}

#[test]
fn label_out_of_range_in_annotations() {
    let top = tempfile::tempdir().unwrap();
    common::write_tiny(top.path(), 1);
    let p = top.path().join("val/val_annotations.txt");
    let ann = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, ann.replace("val_2.JPEG\tn02", "val_2.JPEG\tn99")).unwrap();
    let msg = err(top.path());
    assert!(
        msg.contains("val_annotations.txt: line 3: class n99 is not in wnids.txt (label out of range 0..3)"),
        "{msg}"
    );
}

#[test]
fn missing_files_and_empty_directories() {
    let top = tempfile::tempdir().unwrap();
    let e = load_tiny_imagenet(top.path(), &NO_CACHE).unwrap_err();
    assert!(matches!(e, DataError::EmptyDir { .. }), "{e}");

    common::write_tiny(top.path(), 1);
    std::fs::remove_file(top.path().join("val/images/val_1.JPEG")).unwrap();
    let msg = err(top.path());
    assert!(msg.contains("val/images/val_1.JPEG: missing file; expected val image"), "{msg}");

    std::fs::remove_dir_all(top.path().join("train/n02")).unwrap();
    let msg = err(top.path());
    assert!(msg.contains("train/n02/images: missing file; expected JPEG images of class n02"), "{msg}");

    std::fs::remove_file(top.path().join("wnids.txt")).unwrap();
    let msg = err(top.path());
    assert!(msg.contains("wnids.txt: missing file; expected Tiny-ImageNet wnids.txt"), "{msg}");

    let top = tempfile::tempdir().unwrap();
    common::write_tiny(top.path(), 1);
    for f in std::fs::read_dir(top.path().join("train/n01/images")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let e = load_tiny_imagenet(top.path(), &NO_CACHE).unwrap_err();
    assert!(matches!(e, DataError::EmptyDir { .. }), "{e}");
    assert!(e.to_string().contains("train/n01/images: directory is empty"), "{e}");
}

#[test]
fn generic_loader_uses_the_cache_by_default() {
    let top = tempfile::tempdir().unwrap();
    common::write_tiny(top.path(), 1);
    let d = Dataset::load(DatasetKind::TinyImageNet, top.path()).unwrap();
    assert_eq!(d.train.len(), 3);
    let caches = std::fs::read_dir(top.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("relief-cache-"))
        .count();
    assert_eq!(caches, 1);
}
