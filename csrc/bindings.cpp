// pybind11 bindings of sslfast._C: the CPU kernels (the GPU kernels are Triton).
#include <torch/extension.h>

#include <vector>

namespace sslfast {
void vq_lookup_cpu(const at::Tensor& x, const at::Tensor& codebook, at::Tensor& indices, at::Tensor& sqdist);
}  // namespace sslfast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sslfast compiled kernels";
  m.def("vq_lookup_cpu", &sslfast::vq_lookup_cpu, "Nearest-codebook lookup (CPU)",
        pybind11::arg("x"), pybind11::arg("codebook"), pybind11::arg("indices"),
        pybind11::arg("sqdist"));
}
