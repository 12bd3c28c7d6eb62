//! GroundingDINO's image preprocessing, as the reference `GroundingDinoImageProcessorPil` does
//! it with `size = {shortest_edge: S, longest_edge: S}` and `pad_size = S × S`:
//!
//! 1. **resize** with PIL's bilinear filter so that the long edge is `S` (the reference's
//!    `get_size_with_aspect_ratio`, with its rounding);
//! 2. **rescale** by 1/255 and **normalise** with the ImageNet mean and standard deviation;
//! 3. **pad** bottom and right with zeros to an `S × S` canvas, with a pixel mask of ones over
//!    the image and zeros over the padding.
//!
//! Every image of a batch has the same `S × S` shape, so any images batch together, as the
//! reference pads a batch to its largest image. The reference's default (short edge 800, long
//! edge at most 1333) gives 1.8× the pixels of an 800-px long edge; imgd decodes the objects
//! tier at 800 px on the long edge and runs the model at that size.

use image::RgbImage;
use imgd_vision::pil::{PilFilter, resize_pil};

/// ImageNet's per-channel mean, RGB.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation, RGB.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// One image ready for the model: resized, still 8-bit (a quarter of the f32 input's bytes,
/// which is what an image waiting for its batch holds). [`Prepared::write_into`] normalises it
/// onto the canvas when its batch is assembled.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The side of the square canvas.
    pub size: u32,
    /// The resized image, at most `size × size`; it sits at the canvas's top-left corner.
    pub image: RgbImage,
}

impl Prepared {
    /// The resized image's width and height on the canvas.
    pub fn resized(&self) -> (u32, u32) {
        self.image.dimensions()
    }

    /// Writes the normalised canvas into `pixels` (channel-major, `3 × size × size`, zero where
    /// padded) and the pixel mask into `mask` (`size × size`: 1 over the image, 0 over the
    /// padding). Both must have those lengths.
    pub fn write_into<M: From<u8> + Copy>(&self, pixels: &mut [f32], mask: &mut [M]) {
        let side = self.size as usize;
        let plane = side * side;
        pixels[..3 * plane].fill(0.0);
        mask[..plane].fill(M::from(0));
        let one = M::from(1);
        for (x, y, pixel) in self.image.enumerate_pixels() {
            let at = y as usize * side + x as usize;
            mask[at] = one;
            for c in 0..3 {
                let value = f32::from(pixel[c]) * (1.0 / 255.0);
                pixels[c * plane + at] = (value - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
    }

    /// The normalised canvas and the pixel mask, as [`Self::write_into`] writes them.
    pub fn normalized(&self) -> (Vec<f32>, Vec<u8>) {
        let plane = self.size as usize * self.size as usize;
        let (mut pixels, mut mask) = (vec![0.0; 3 * plane], vec![0u8; plane]);
        self.write_into(&mut pixels, &mut mask);
        (pixels, mask)
    }
}

/// The reference's `get_size_with_aspect_ratio(size=shortest, max_size=longest)` for an image
/// of `width × height`: returns the new (width, height).
pub fn output_size(width: u32, height: u32, shortest: u32, longest: u32) -> (u32, u32) {
    let (h, w) = (f64::from(height), f64::from(width));
    let mut size = f64::from(shortest);
    let mut raw_size = None;
    let (min_side, max_side) = (h.min(w), h.max(w));
    if max_side / min_side * size > f64::from(longest) {
        let raw = f64::from(longest) * min_side / max_side;
        raw_size = Some(raw);
        size = raw.round();
    }
    if (h <= w && h == size) || (w <= h && w == size) {
        return (width, height);
    }
    let scaled = raw_size.unwrap_or(size);
    if w < h {
        (size as u32, (scaled * h / w) as u32)
    } else {
        ((scaled * w / h) as u32, size as u32)
    }
}

/// Prepares `image` for a model that takes `size × size` inputs: the resize only.
pub fn prepare(image: &RgbImage, size: u32) -> Prepared {
    let (width, height) = output_size(image.width(), image.height(), size, size);
    let (width, height) = (width.clamp(1, size), height.clamp(1, size));
    let image = if (width, height) == image.dimensions() {
        image.clone()
    } else {
        resize_pil(image, width, height, PilFilter::Bilinear)
    };
    Prepared { size, image }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_edge_becomes_the_size() {
        assert_eq!(output_size(200, 150, 128, 128), (128, 96));
        assert_eq!(output_size(150, 200, 128, 128), (96, 128));
        assert_eq!(output_size(800, 600, 800, 800), (800, 600));
        assert_eq!(output_size(100, 100, 128, 128), (128, 128));
        // The reference's default: short edge 800 unless the long edge passes 1333.
        assert_eq!(output_size(640, 480, 800, 1333), (1066, 800));
        assert_eq!(output_size(3000, 1000, 800, 1333), (1333, 444));
    }

    #[test]
    fn extreme_shapes_fit_the_canvas() {
        // A 1-px image, a panorama strip and a tall sliver: the canvas never changes, the
        // image keeps at least one pixel on each side.
        for (w, h) in [(1, 1), (4000, 3), (2, 3000)] {
            let prepared = prepare(&RgbImage::new(w, h), 64);
            let (rw, rh) = prepared.resized();
            let (pixels, mask) = prepared.normalized();
            assert!(
                rw >= 1 && rh >= 1 && rw <= 64 && rh <= 64,
                "{w}x{h} -> {rw}x{rh}"
            );
            assert_eq!(pixels.len(), 3 * 64 * 64);
            let ones = mask.iter().filter(|&&m| m == 1).count();
            assert_eq!(ones, (rw * rh) as usize, "{w}x{h}");
        }
    }

    #[test]
    fn padding_is_zero_and_masked_out() {
        let image = RgbImage::from_pixel(128, 64, image::Rgb([255, 128, 0]));
        let prepared = prepare(&image, 128);
        assert_eq!(prepared.resized(), (128, 64));
        let (pixels, mask) = prepared.normalized();
        let plane = 128 * 128;
        assert_eq!(
            mask[..64 * 128].iter().filter(|&&m| m == 1).count(),
            64 * 128
        );
        assert!(mask[64 * 128..].iter().all(|&m| m == 0));
        assert!(pixels[64 * 128..plane].iter().all(|&v| v == 0.0));
        let red = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        assert!((pixels[0] - red).abs() < 1e-6);
    }
}
