//! Sharpness, exposure, noise and colours (in progress).
