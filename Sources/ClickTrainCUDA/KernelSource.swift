/// The hand-written CUDA kernels of the dense GPU step (everything but the convolutions and
/// the linear layers' products), compiled once per run by NVRTC for the GPU found.
/// Tensors are NCHW float; `total` counts elements; reductions accumulate in double.
package enum KernelSource {
    package static let names = [
        "bias_add", "channel_sums", "bn_finalize", "bn_apply", "bn_backward_sums", "bn_backward_apply",
        "relu_forward", "relu_backward", "add_relu_forward", "add", "maxpool_forward", "maxpool_backward",
        "global_avgpool_forward", "global_avgpool_backward", "softmax_cross_entropy", "sgd_step", "row_sums",
    ]

    package static let source = #"""
extern "C" {

#define FOR_EACH(i, total) for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
                                i += (long)blockDim.x * gridDim.x)

// Block-wide sum of v, valid in thread 0. blockDim.x is 256.
__device__ double block_sum(double v) {
    __shared__ double part[256];
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    double total = part[0];
    __syncthreads();  // part may be reused by the next call
    return total;
}

// Block-wide sum of v added to acc (one atomic per block).
__device__ void block_sum_into(double v, double* acc) {
    double total = block_sum(v);
    if (threadIdx.x == 0) atomicAdd(acc, total);
}

// y[n, c, :] += b[c]
__global__ void bias_add(float* y, const float* b, int C, int HW, long total) {
    FOR_EACH(i, total) y[i] += b[(i / HW) % C];
}

// Per channel c (blockIdx.y), blocks along x split the N*HW elements: acc[2c] += sum x,
// acc[2c+1] += sum x^2.
__global__ void channel_sums(const float* x, int N, int C, int HW, double* acc) {
    int c = blockIdx.y;
    long m = (long)N * HW;
    double s = 0, q = 0;
    for (long j = (long)blockIdx.x * blockDim.x + threadIdx.x; j < m; j += (long)blockDim.x * gridDim.x) {
        long n = j / HW, p = j - n * HW;
        float v = x[(n * C + c) * HW + p];
        s += v;
        q += (double)v * v;
    }
    block_sum_into(s, acc + 2 * c);
    block_sum_into(q, acc + 2 * c + 1);
}

// Batch statistics from channel_sums (training) or the running ones (inference) into
// mean / invstd; training also moves the running statistics (unbiased variance).
__global__ void bn_finalize(const double* acc, int C, long m, float momentum, float eps, int training,
                            float* mean, float* invstd, float* running_mean, float* running_var) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    if (!training) {
        mean[c] = running_mean[c];
        invstd[c] = 1.f / sqrtf(running_var[c] + eps);
        return;
    }
    double mu = acc[2 * c] / m;
    double var = acc[2 * c + 1] / m - mu * mu;
    if (var < 0) var = 0;
    mean[c] = (float)mu;
    invstd[c] = (float)(1.0 / sqrt(var + eps));
    double unbiased = m > 1 ? var * m / (m - 1) : var;
    running_mean[c] = (1 - momentum) * running_mean[c] + momentum * (float)mu;
    running_var[c] = (1 - momentum) * running_var[c] + momentum * (float)unbiased;
}

__global__ void bn_apply(const float* x, float* y, const float* mean, const float* invstd, const float* gamma,
                         const float* beta, int C, int HW, long total, int relu) {
    FOR_EACH(i, total) {
        int c = (i / HW) % C;
        float v = (x[i] - mean[c]) * invstd[c] * gamma[c] + beta[c];
        y[i] = relu ? fmaxf(v, 0.f) : v;
    }
}

// acc[2c] += sum dy, acc[2c+1] += sum dy * xhat; with a fused ReLU (y given) dy is taken
// where the output was positive only.
__global__ void bn_backward_sums(const float* x, const float* y, const float* dy, const float* mean,
                                 const float* invstd, int N, int C, int HW, double* acc) {
    int c = blockIdx.y;
    long m = (long)N * HW;
    double s = 0, q = 0;
    for (long j = (long)blockIdx.x * blockDim.x + threadIdx.x; j < m; j += (long)blockDim.x * gridDim.x) {
        long n = j / HW, p = j - n * HW;
        long i = (n * C + c) * HW + p;
        float g = dy[i];
        if (y && y[i] <= 0.f) g = 0.f;
        s += g;
        q += (double)g * ((x[i] - mean[c]) * invstd[c]);
    }
    block_sum_into(s, acc + 2 * c);
    block_sum_into(q, acc + 2 * c + 1);
}

// dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)); thread c < C of block 0
// also writes dgamma = sum dy * xhat and dbeta = sum dy.
__global__ void bn_backward_apply(const float* x, const float* y, const float* dy, const float* mean,
                                  const float* invstd, const float* gamma, const double* acc, int C, int HW,
                                  long total, long m, float* dx, float* dgamma, float* dbeta) {
    if (blockIdx.x == 0) {
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            dbeta[c] = (float)acc[2 * c];
            dgamma[c] = (float)acc[2 * c + 1];
        }
    }
    if (!dx) return;
    FOR_EACH(i, total) {
        int c = (i / HW) % C;
        float g = dy[i];
        if (y && y[i] <= 0.f) g = 0.f;
        float xhat = (x[i] - mean[c]) * invstd[c];
        dx[i] = gamma[c] * invstd[c] * (g - (float)(acc[2 * c] / m) - xhat * (float)(acc[2 * c + 1] / m));
    }
}

__global__ void relu_forward(const float* x, float* y, long total) {
    FOR_EACH(i, total) y[i] = fmaxf(x[i], 0.f);
}

// dx = dy where the output y was positive.
__global__ void relu_backward(const float* y, const float* dy, float* dx, long total) {
    FOR_EACH(i, total) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

__global__ void add_relu_forward(const float* a, const float* b, float* y, long total) {
    FOR_EACH(i, total) y[i] = fmaxf(a[i] + b[i], 0.f);
}

__global__ void add(const float* a, const float* b, float* y, long total) {
    FOR_EACH(i, total) y[i] = a[i] + b[i];
}

// Max pooling, k x k windows, stride s, padding p; idx keeps the input offset of each max.
__global__ void maxpool_forward(const float* x, float* y, int* idx, int H, int W, int OH, int OW, int k, int s,
                                int p, long total) {
    FOR_EACH(i, total) {
        int ow = i % OW, oh = (i / OW) % OH;
        long plane = i / ((long)OW * OH);
        const float* xp = x + plane * H * W;
        float best = -__int_as_float(0x7f800000);
        int at = -1;
        for (int dh = 0; dh < k; dh++) {
            int h = oh * s - p + dh;
            if (h < 0 || h >= H) continue;
            for (int dw = 0; dw < k; dw++) {
                int w = ow * s - p + dw;
                if (w < 0 || w >= W) continue;
                float v = xp[h * W + w];
                if (v > best || at < 0) { best = v; at = h * W + w; }
            }
        }
        y[i] = at < 0 ? 0.f : best;  // a window wholly in the padding gives 0, as on the CPU
        idx[i] = at;
    }
}

// dx must be zero; overlapping windows add.
__global__ void maxpool_backward(const float* dy, const int* idx, float* dx, int H, int W, int OH, int OW,
                                 long total) {
    FOR_EACH(i, total) {
        long plane = i / ((long)OW * OH);
        if (idx[i] >= 0) atomicAdd(dx + plane * H * W + idx[i], dy[i]);
    }
}

// One thread per plane: y[plane] = mean of its HW values.
__global__ void global_avgpool_forward(const float* x, float* y, int HW, long planes) {
    FOR_EACH(i, planes) {
        const float* xp = x + i * HW;
        float s = 0.f;
        for (int j = 0; j < HW; j++) s += xp[j];
        y[i] = s / HW;
    }
}

__global__ void global_avgpool_backward(const float* dy, float* dx, int HW, long total) {
    FOR_EACH(i, total) dx[i] = dy[i / HW] / HW;
}

// One thread per row of logits [n, k]: the row's loss (label smoothing eps) and whether its
// arg-max is the label go into stats[0] and stats[1]; grad = (softmax - target) / n.
__global__ void softmax_cross_entropy(const float* logits, const int* labels, int n, int k, float eps,
                                      float* grad, double* stats) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    double loss = 0, ok = 0;
    if (r < n) {
        const float* row = logits + (long)r * k;
        float mx = row[0];
        int am = 0;
        for (int j = 1; j < k; j++) if (row[j] > mx) { mx = row[j]; am = j; }
        int label = labels[r];
        double s = 0, sum = 0;
        for (int j = 0; j < k; j++) { s += exp((double)(row[j] - mx)); sum += row[j]; }
        double logz = mx + log(s);
        loss = (1 - eps) * (logz - row[label]);
        if (eps > 0) loss += eps * (logz - sum / k);
        ok = am == label ? 1 : 0;
        if (grad) {
            for (int j = 0; j < k; j++) {
                float p = (float)exp((double)row[j] - logz);
                float t = (j == label ? 1 - eps : 0) + eps / k;
                grad[(long)r * k + j] = (p - t) / n;
            }
        }
    }
    block_sum_into(loss, stats);
    block_sum_into(ok, stats + 1);
}

// SGD with momentum over the flat parameter buffer, PyTorch's rule; decay holds each
// element's weight decay, mask 1 or 0 (pruned). Skipped when the step's loss (stats[0]) is
// not finite, so such a step changes nothing.
__global__ void sgd_step(float* w, const float* g, float* buf, const float* decay, const float* mask, long total,
                         float lr, float mu, int nesterov, const double* stats) {
    if (!isfinite(stats[0])) return;
    FOR_EACH(i, total) {
        float gi = g[i] + decay[i] * w[i];
        float bi = mu * buf[i] + gi;
        float wi = w[i] - lr * (nesterov ? gi + mu * bi : bi);
        float m = mask[i];
        buf[i] = bi * m;
        w[i] = wi * m;
    }
}

// out[c] = sum over rows r and positions p of x[(r * C + c) * HW + p] (a bias's gradient);
// one block per c.
__global__ void row_sums(const float* x, int N, int C, int HW, float* out) {
    int c = blockIdx.x;
    long m = (long)N * HW;
    double s = 0;
    for (long j = threadIdx.x; j < m; j += blockDim.x) {
        long n = j / HW, p = j - n * HW;
        s += x[(n * C + c) * HW + p];
    }
    double total = block_sum(s);
    if (threadIdx.x == 0) out[c] = (float)total;
}

}
"""#
}
