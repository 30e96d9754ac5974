// The branch kinds of hdas::conv_candidates (see conv_candidates.h): DARTS' separable and dilated
// convolutions. Torch-free, so that device code can include it.
#pragma once

#include <cstdint>

namespace hdas {

enum ConvKind : int64_t { kSep3 = 0, kSep5 = 1, kDil3 = 2, kDil5 = 3, kSep7 = 4 };
constexpr int64_t kNumConvKinds = 5;

// A kind's depthwise kernel size, dilation and halves (2: a separable convolution's
// ReLU-depthwise-pointwise-BN twice; 1: a dilated convolution's once). Padding is "same":
// dilation * (k - 1) / 2, so that an output has the input's size at stride 1.
struct ConvShape {
  int64_t k, dilation, halves;
  constexpr int64_t pad() const { return dilation * (k - 1) / 2; }
};

constexpr ConvShape conv_shape(int64_t kind) {
  switch (kind) {
    case kSep3: return {3, 1, 2};
    case kSep5: return {5, 1, 2};
    case kDil3: return {3, 2, 1};
    case kDil5: return {5, 2, 1};
    default: return {7, 1, 2};  // kSep7
  }
}

// The largest padding of any kind: the border of the padded planes the kernels read.
constexpr int64_t kMaxConvPad = 4;

}  // namespace hdas
