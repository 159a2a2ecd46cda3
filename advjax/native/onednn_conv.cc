// 2-D convolutions on oneDNN, as XLA FFI handlers for the CPU backend (advjax/native/onednn.py).
//
// Layouts are JAX's: activations NHWC, weights HWIO, float32, dense row-major buffers. The
// primitives keep NHWC activations (oneDNN's brgconv/jit kernels read and write them directly, no
// reorder) and choose their own weights layout (`any`); the weights, small, are reordered on each
// call. Three handlers: forward (x, w) -> y; backward data (dy, w) -> dx; backward weights
// (x, dy) -> dw. Output shapes come from the result buffers, strides and paddings from attributes.
//
// Primitives are created once per (kind, geometry) and per calling thread, with a user-managed
// scratchpad per thread: a primitive is then only ever executed by one thread at a time, with no
// lock, also when XLA runs several simulated devices on several threads.
#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

struct Geometry {
  int64_t n, h, w, c, o, kh, kw, ho, wo, sh, sw, plh, phh, plw, phw;

  std::string key(char kind) const {
    std::string s(1, kind);
    for (int64_t v : {n, h, w, c, o, kh, kw, ho, wo, sh, sw, plh, phh, plw, phw}) {
      s += ',';
      s += std::to_string(v);
    }
    return s;
  }
  memory::desc x(tag t = tag::nhwc) const { return memory::desc({n, c, h, w}, dt::f32, t); }
  memory::desc wt(tag t) const { return memory::desc({o, c, kh, kw}, dt::f32, t); }
  memory::desc y(tag t = tag::nhwc) const { return memory::desc({n, o, ho, wo}, dt::f32, t); }
  memory::dims strides() const { return {sh, sw}; }
  memory::dims pad_lo() const { return {plh, plw}; }
  memory::dims pad_hi() const { return {phh, phw}; }

  static dnnl::primitive_attr attr() {
    dnnl::primitive_attr a;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return a;
  }
  dnnl::convolution_forward::primitive_desc fwd_pd() const {
    return dnnl::convolution_forward::primitive_desc(
        cpu_engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x(),
        wt(tag::any), y(), strides(), pad_lo(), pad_hi(), attr());
  }
};

struct Entry {
  dnnl::primitive prim;
  memory::desc weights;  // the primitive's (diff_)weights layout
  memory::desc scratch;
};

thread_local std::unordered_map<std::string, Entry> cache;
thread_local std::vector<uint8_t> scratch_buffer;

memory scratch_memory(const memory::desc& d) {
  size_t bytes = d.get_size();
  if (scratch_buffer.size() < bytes) scratch_buffer.resize(bytes);
  return memory(d, cpu_engine(), scratch_buffer.data());
}

// The cached primitive for this geometry and operation, made by make() on first use.
template <typename Make>
Entry& cached(const Geometry& g, char op, Make&& make) {
  std::string k = g.key(op);
  auto it = cache.find(k);
  if (it == cache.end()) it = cache.emplace(k, make()).first;
  return it->second;
}

using Dims = ffi::Buffer<ffi::F32>::Dimensions;

Geometry geometry(Dims xs, Dims ws, Dims ys, int64_t sh, int64_t sw, int64_t plh, int64_t phh,
                  int64_t plw, int64_t phw) {
  return Geometry{xs[0], xs[1], xs[2], xs[3], ws[3], ws[0], ws[1], ys[1], ys[2],
                  sh,    sw,    plh,   phh,   plw,   phw};
}

ffi::Error check(Dims xs, Dims ws, Dims ys) {
  if (xs.size() != 4 || ws.size() != 4 || ys.size() != 4)
    return ffi::Error::InvalidArgument("advjax onednn conv: operands must be 4-D (NHWC, HWIO)");
  if (xs[0] != ys[0] || xs[3] != ws[2] || ys[3] != ws[3])
    return ffi::Error::InvalidArgument("advjax onednn conv: operand shapes do not match");
  return ffi::Error::Success();
}

template <typename F>
ffi::Error guarded(F&& f) {
  try {
    f();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("advjax onednn conv: ") + e.what());
  }
  return ffi::Error::Success();
}

// The user's HWIO weights in the primitive's layout (a reorder when they differ).
memory weights_in(const Geometry& g, const memory::desc& want, float* data, dnnl::stream& s) {
  memory user(g.wt(tag::hwio), cpu_engine(), data);
  if (want == user.get_desc()) return user;
  memory out(want, cpu_engine());
  dnnl::reorder(user, out).execute(s, user, out);
  return out;
}

ffi::Error ConvFwdImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> y, int64_t sh, int64_t sw, int64_t plh,
                       int64_t phh, int64_t plw, int64_t phw) {
  if (auto e = check(x.dimensions(), w.dimensions(), y->dimensions()); e.failure()) return e;
  Geometry g = geometry(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, plh, phh, plw, phw);
  return guarded([&] {
    Entry& en = cached(g, 'f', [&] {
      auto pd = g.fwd_pd();
      return Entry{dnnl::convolution_forward(pd), pd.weights_desc(), pd.scratchpad_desc()};
    });
    dnnl::stream s(cpu_engine());
    memory wm = weights_in(g, en.weights, w.typed_data(), s);
    memory xm(g.x(), cpu_engine(), x.typed_data());
    memory ym(g.y(), cpu_engine(), y->typed_data());
    en.prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym},
                        {DNNL_ARG_SCRATCHPAD, scratch_memory(en.scratch)}});
    s.wait();
  });
}

ffi::Error ConvBwdDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                           ffi::ResultBuffer<ffi::F32> dx, int64_t sh, int64_t sw, int64_t plh,
                           int64_t phh, int64_t plw, int64_t phw) {
  if (auto e = check(dx->dimensions(), w.dimensions(), dy.dimensions()); e.failure()) return e;
  Geometry g = geometry(dx->dimensions(), w.dimensions(), dy.dimensions(), sh, sw, plh, phh, plw, phw);
  return guarded([&] {
    Entry& en = cached(g, 'd', [&] {
      auto pd = dnnl::convolution_backward_data::primitive_desc(
          cpu_engine(), dnnl::algorithm::convolution_direct, g.x(), g.wt(tag::any), g.y(),
          g.strides(), g.pad_lo(), g.pad_hi(), g.fwd_pd(), Geometry::attr());
      return Entry{dnnl::convolution_backward_data(pd), pd.weights_desc(), pd.scratchpad_desc()};
    });
    dnnl::stream s(cpu_engine());
    memory wm = weights_in(g, en.weights, w.typed_data(), s);
    memory dym(g.y(), cpu_engine(), dy.typed_data());
    memory dxm(g.x(), cpu_engine(), dx->typed_data());
    en.prim.execute(s, {{DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DIFF_SRC, dxm},
                        {DNNL_ARG_SCRATCHPAD, scratch_memory(en.scratch)}});
    s.wait();
  });
}

ffi::Error ConvBwdWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                              ffi::ResultBuffer<ffi::F32> dw, int64_t sh, int64_t sw, int64_t plh,
                              int64_t phh, int64_t plw, int64_t phw) {
  if (auto e = check(x.dimensions(), dw->dimensions(), dy.dimensions()); e.failure()) return e;
  Geometry g = geometry(x.dimensions(), dw->dimensions(), dy.dimensions(), sh, sw, plh, phh, plw, phw);
  return guarded([&] {
    Entry& en = cached(g, 'w', [&] {
      auto pd = dnnl::convolution_backward_weights::primitive_desc(
          cpu_engine(), dnnl::algorithm::convolution_direct, g.x(), g.wt(tag::any), g.y(),
          g.strides(), g.pad_lo(), g.pad_hi(), g.fwd_pd(), Geometry::attr());
      return Entry{dnnl::convolution_backward_weights(pd), pd.diff_weights_desc(), pd.scratchpad_desc()};
    });
    dnnl::stream s(cpu_engine());
    memory user(g.wt(tag::hwio), cpu_engine(), dw->typed_data());
    bool reorder_out = en.weights != user.get_desc();
    memory dwm = reorder_out ? memory(en.weights, cpu_engine()) : user;
    memory xm(g.x(), cpu_engine(), x.typed_data());
    memory dym(g.y(), cpu_engine(), dy.typed_data());
    en.prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_DIFF_WEIGHTS, dwm},
                        {DNNL_ARG_SCRATCHPAD, scratch_memory(en.scratch)}});
    if (reorder_out) dnnl::reorder(dwm, user).execute(s, dwm, user);
    s.wait();
  });
}

}  // namespace

#define ADVJAX_CONV_BINDING                                                              \
  ffi::Ffi::Bind()                                                                       \
      .Arg<ffi::Buffer<ffi::F32>>()                                                      \
      .Arg<ffi::Buffer<ffi::F32>>()                                                      \
      .Ret<ffi::Buffer<ffi::F32>>()                                                      \
      .Attr<int64_t>("sh")                                                               \
      .Attr<int64_t>("sw")                                                               \
      .Attr<int64_t>("plh")                                                              \
      .Attr<int64_t>("phh")                                                              \
      .Attr<int64_t>("plw")                                                              \
      .Attr<int64_t>("phw")

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdvjaxOnednnConvFwd, ConvFwdImpl, ADVJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(AdvjaxOnednnConvBwdData, ConvBwdDataImpl, ADVJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(AdvjaxOnednnConvBwdWeights, ConvBwdWeightsImpl, ADVJAX_CONV_BINDING);
