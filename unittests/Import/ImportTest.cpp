//===- ImportTest.cpp - ONNX import: external data and real weights -------===//

#include "Concrete.h"
#include "ONNXModel.h"
#include "Raiser.h"

#include "sq/Dialect/SQ/IR/SQ.h"
#include "sq/Import/ONNX.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

using namespace sq;
using namespace sq::onnx_import;

namespace {

/// A temporary directory with a minimal model file and a data file.
class ExternalDataTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("sq-extdata", dir));
    // 16 floats 0..15 in model.data.
    std::ofstream data(path("model.data"), std::ios::binary);
    for (int i = 0; i < 16; ++i) {
      float f = static_cast<float>(i);
      data.write(reinterpret_cast<const char *>(&f), 4);
    }
    data.close();
    onnx::ModelProto m;
    m.set_ir_version(8);
    m.mutable_graph()->add_node()->set_op_type("Identity");
    std::ofstream model(path("model.onnx"), std::ios::binary);
    ASSERT_TRUE(m.SerializeToOstream(&model));
  }
  void TearDown() override { llvm::sys::fs::remove_directories(dir); }

  std::string path(llvm::StringRef name) {
    llvm::SmallString<256> p(dir);
    llvm::sys::path::append(p, name);
    return std::string(p);
  }

  /// A float tensor of `dims` in external data.
  onnx::TensorProto tensor(std::vector<int64_t> dims, std::string location,
                           std::string offset = "", std::string length = "") {
    onnx::TensorProto t;
    t.set_name("w");
    t.set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims)
      t.add_dims(d);
    t.set_data_location(onnx::TensorProto::EXTERNAL);
    auto add = [&](const char *k, const std::string &v) {
      if (v.empty())
        return;
      auto *e = t.add_external_data();
      e->set_key(k);
      e->set_value(v);
    };
    add("location", location);
    add("offset", offset);
    add("length", length);
    return t;
  }

  bool read(const onnx::TensorProto &t, TensorBytes &out, std::string &err) {
    std::string loadErr;
    auto model = OnnxModel::load(path("model.onnx"), loadErr);
    EXPECT_TRUE(model) << loadErr;
    return model && model->readTensor(t, out, err);
  }

  llvm::SmallString<256> dir;
};

TEST_F(ExternalDataTest, ReadsWholeFileAndSlices) {
  TensorBytes all, slice;
  std::string err;
  ASSERT_TRUE(read(tensor({4, 4}, "model.data"), all, err)) << err;
  ASSERT_EQ(all.bytes.size(), 64u);
  float f;
  std::memcpy(&f, all.bytes.data() + 4 * 7, 4);
  EXPECT_EQ(f, 7.0f);
  ASSERT_TRUE(read(tensor({2}, "model.data", "40", "8"), slice, err)) << err;
  std::memcpy(&f, slice.bytes.data(), 4);
  EXPECT_EQ(f, 10.0f);
  std::memcpy(&f, slice.bytes.data() + 4, 4);
  EXPECT_EQ(f, 11.0f);
  // The mapping outlives the model object.
  EXPECT_TRUE(slice.keepAlive);
}

TEST_F(ExternalDataTest, RejectsOutOfBounds) {
  TensorBytes out;
  std::string err;
  EXPECT_FALSE(read(tensor({4}, "model.data", "60"), out, err));
  EXPECT_NE(err.find("lies beyond the end of 'model.data' (64 bytes)"),
            std::string::npos)
      << err;
  EXPECT_FALSE(read(tensor({4}, "model.data", "9999999999999"), out, err));
  EXPECT_NE(err.find("lies beyond the end"), std::string::npos) << err;
  EXPECT_FALSE(read(tensor({32}, "model.data"), out, err));
  EXPECT_NE(err.find("lies beyond the end"), std::string::npos) << err;
}

TEST_F(ExternalDataTest, RejectsLengthMismatchAndBadNumbers) {
  TensorBytes out;
  std::string err;
  EXPECT_FALSE(read(tensor({4}, "model.data", "0", "12"), out, err));
  EXPECT_NE(err.find("length 12 does not match its shape (16 bytes)"),
            std::string::npos)
      << err;
  EXPECT_FALSE(read(tensor({4}, "model.data", "-4"), out, err));
  EXPECT_NE(err.find("offset '-4' is not a non-negative integer"),
            std::string::npos)
      << err;
  EXPECT_FALSE(read(tensor({4}, "model.data", "12abc"), out, err));
  EXPECT_NE(err.find("is not a non-negative integer"), std::string::npos);
}

TEST_F(ExternalDataTest, RefusesPathsOutsideTheModelDirectory) {
  TensorBytes out;
  std::string err;
  EXPECT_FALSE(read(tensor({4}, "/etc/passwd"), out, err));
  EXPECT_NE(err.find("must be a path relative to the model's directory"),
            std::string::npos)
      << err;
  EXPECT_FALSE(read(tensor({4}, "../model.data"), out, err));
  EXPECT_NE(err.find("'..' is not allowed"), std::string::npos) << err;
  EXPECT_FALSE(read(tensor({4}, "sub/../../x"), out, err));
  EXPECT_NE(err.find("'..' is not allowed"), std::string::npos) << err;
  EXPECT_FALSE(read(tensor({4}, ""), out, err));
  // A symbolic link that leads outside is refused too.
  ASSERT_FALSE(llvm::sys::fs::create_link("/etc/hostname", path("escape")));
  EXPECT_FALSE(read(tensor({1}, "escape"), out, err));
  EXPECT_NE(err.find("resolves outside the model's directory"),
            std::string::npos)
      << err;
}

TEST_F(ExternalDataTest, MissingFileAndHugeShapes) {
  TensorBytes out;
  std::string err;
  EXPECT_FALSE(read(tensor({4}, "nope.data"), out, err));
  EXPECT_NE(err.find("cannot open external data file"), std::string::npos);
  // A declared size far beyond any file is rejected before allocating.
  EXPECT_FALSE(read(tensor({1 << 30, 1 << 30}, "model.data"), out, err));
  EXPECT_NE(err.find("absurdly large"), std::string::npos) << err;
  EXPECT_FALSE(read(tensor({-1, 4}, "model.data"), out, err));
  EXPECT_NE(err.find("negative dimension -1"), std::string::npos) << err;
}

TEST_F(ExternalDataTest, TypedFieldsAndRawData) {
  std::string loadErr, err;
  auto model = OnnxModel::load(path("model.onnx"), loadErr);
  ASSERT_TRUE(model);
  onnx::TensorProto t;
  t.set_data_type(onnx::TensorProto::INT64);
  t.add_dims(3);
  for (int64_t v : {5, -6, 7})
    t.add_int64_data(v);
  TensorBytes out;
  ASSERT_TRUE(model->readTensor(t, out, err)) << err;
  int64_t v;
  std::memcpy(&v, out.bytes.data() + 8, 8);
  EXPECT_EQ(v, -6);
  // fp16 values travel in int32_data.
  onnx::TensorProto h;
  h.set_data_type(onnx::TensorProto::FLOAT16);
  h.add_dims(2);
  h.add_int32_data(0x3C00); // 1.0
  h.add_int32_data(0xC000); // -2.0
  ASSERT_TRUE(model->readTensor(h, out, err)) << err;
  uint16_t bits;
  std::memcpy(&bits, out.bytes.data() + 2, 2);
  EXPECT_EQ(bits, 0xC000);
  // Raw data of the wrong size.
  onnx::TensorProto r;
  r.set_data_type(onnx::TensorProto::FLOAT);
  r.add_dims(2);
  r.set_raw_data(std::string(7, '\0'));
  EXPECT_FALSE(model->readTensor(r, out, err));
  EXPECT_NE(err.find("holds 7 bytes but its shape needs 8"), std::string::npos);
  // Too few typed values.
  onnx::TensorProto f;
  f.set_data_type(onnx::TensorProto::FLOAT);
  f.add_dims(3);
  f.add_float_data(1.0f);
  EXPECT_FALSE(model->readTensor(f, out, err));
  onnx::TensorProto s;
  s.set_data_type(onnx::TensorProto::STRING);
  EXPECT_FALSE(model->readTensor(s, out, err));
  EXPECT_NE(err.find("unsupported data type STRING"), std::string::npos);
}

//===----------------------------------------------------------------------===//
// The imported weights of the real byte-level LLaMA equal, bit for bit, the
// tensors of its independent llama2.c checkpoint (model.bin).
//===----------------------------------------------------------------------===//

std::string sharedData() {
  if (const char *env = std::getenv("SQ_SHARED_DATA"))
    return env;
  return SQ_SOURCE_DIR "/../shared/data";
}

std::map<std::string, std::vector<float>> importedWeights(mlir::ModuleOp m) {
  std::map<std::string, std::vector<float>> weights;
  m.walk([&](WeightOp op) {
    auto res = mlir::cast<mlir::DenseResourceElementsAttr>(op.getValue());
    llvm::ArrayRef<char> data = res.getRawHandle().getBlob()->getData();
    std::vector<float> v(data.size() / 4);
    std::memcpy(v.data(), data.data(), data.size());
    weights[op.getName().str()] = std::move(v);
  });
  return weights;
}

TEST(ImportRealModel, WeightsMatchTheLlama2cCheckpoint) {
  std::string dir = sharedData() + "/wiki2-byte-llama";
  if (!llvm::sys::fs::exists(dir + "/model.bin"))
    GTEST_SKIP() << "shared data not present: " << dir;
  mlir::MLIRContext context;
  std::string err;
  auto module = importOnnxModel(dir + "/model.onnx", &context, err);
  ASSERT_TRUE(module) << err;
  auto weights = importedWeights(*module);

  std::ifstream bin(dir + "/model.bin", std::ios::binary);
  int32_t header[7];
  bin.read(reinterpret_cast<char *>(header), sizeof(header));
  int64_t dim = header[0], hidden = header[1], layers = header[2],
          heads = header[3], kvHeads = header[4], vocab = -header[5],
          seqLen = header[6];
  ASSERT_EQ(dim, 128);
  int64_t hd = dim / heads, kvDim = kvHeads * hd;
  auto next = [&](int64_t n) {
    std::vector<float> v(n);
    bin.read(reinterpret_cast<char *>(v.data()), n * 4);
    return v;
  };
  std::vector<float> emb = next(vocab * dim), rmsAtt = next(layers * dim),
                     wq = next(layers * dim * dim),
                     wk = next(layers * kvDim * dim),
                     wv = next(layers * kvDim * dim),
                     wo = next(layers * dim * dim), rmsFfn = next(layers * dim),
                     w1 = next(layers * hidden * dim),
                     w2 = next(layers * dim * hidden),
                     w3 = next(layers * hidden * dim), rmsFinal = next(dim);
  next(seqLen * hd / 2);
  next(seqLen * hd / 2);
  std::vector<float> wcls = next(vocab * dim);
  ASSERT_TRUE(bin.good());

  auto slice = [](const std::vector<float> &all, int64_t l, int64_t n) {
    return std::vector<float>(all.begin() + l * n, all.begin() + (l + 1) * n);
  };
  // llama2.c rows are in interleaved-pair RoPE order; the ONNX graph (and
  // SQ) use rotate-half: hf row h*hd + j*hd/2 + i is llama2.c row
  // h*hd + 2i + j.
  auto toRotateHalf = [&](const std::vector<float> &w, int64_t nHeads) {
    std::vector<float> out(w.size());
    for (int64_t h = 0; h < nHeads; ++h)
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t i = 0; i < hd / 2; ++i)
          std::memcpy(&out[(h * hd + j * hd / 2 + i) * dim],
                      &w[(h * hd + 2 * i + j) * dim], dim * 4);
    return out;
  };
  EXPECT_EQ(weights["model.embed_tokens.weight"], emb);
  EXPECT_EQ(weights["model.norm.weight"], rmsFinal);
  EXPECT_EQ(weights["lm_head.weight"], wcls);
  for (int64_t l = 0; l < layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    EXPECT_EQ(weights[p + "input_layernorm.weight"], slice(rmsAtt, l, dim));
    EXPECT_EQ(weights[p + "post_attention_layernorm.weight"],
              slice(rmsFfn, l, dim));
    EXPECT_EQ(weights[p + "self_attn.q_proj.weight"],
              toRotateHalf(slice(wq, l, dim * dim), heads));
    EXPECT_EQ(weights[p + "self_attn.k_proj.weight"],
              toRotateHalf(slice(wk, l, kvDim * dim), kvHeads));
    EXPECT_EQ(weights[p + "self_attn.v_proj.weight"],
              slice(wv, l, kvDim * dim));
    EXPECT_EQ(weights[p + "self_attn.o_proj.weight"], slice(wo, l, dim * dim));
    EXPECT_EQ(weights[p + "mlp.gate_proj.weight"], slice(w1, l, hidden * dim));
    EXPECT_EQ(weights[p + "mlp.down_proj.weight"], slice(w2, l, dim * hidden));
    EXPECT_EQ(weights[p + "mlp.up_proj.weight"], slice(w3, l, hidden * dim));
  }
  EXPECT_EQ(weights.size(), 3u + 9u * layers);
}

// Every ONNX model in ../shared/data imports, and its op counts match the
// layer count recovered from the graph: per layer one attention, two norms,
// seven linears (plus the final norm and lm_head).
TEST(ImportRealModel, EveryOnnxModelInSharedData) {
  std::string root = sharedData();
  if (!llvm::sys::fs::is_directory(root))
    GTEST_SKIP() << "shared data not present: " << root;
  std::error_code ec;
  int models = 0;
  for (llvm::sys::fs::recursive_directory_iterator it(root, ec), end;
       it != end && !ec; it.increment(ec)) {
    if (!llvm::StringRef(it->path()).ends_with(".onnx"))
      continue;
    ++models;
    SCOPED_TRACE(it->path());
    mlir::MLIRContext context;
    std::string err;
    auto module = importOnnxModel(it->path(), &context, err);
    ASSERT_TRUE(module) << err;
    auto config = (*module)->getAttrOfType<mlir::DictionaryAttr>("sq.config");
    ASSERT_TRUE(config);
    int64_t layers =
        mlir::cast<mlir::IntegerAttr>(config.get("num_hidden_layers")).getInt();
    int64_t attention = 0, norms = 0, linears = 0;
    module->walk([&](mlir::Operation *op) {
      attention += mlir::isa<AttentionOp>(op);
      norms += mlir::isa<RMSNormOp>(op);
      linears += mlir::isa<LinearOp>(op);
    });
    EXPECT_GT(layers, 0);
    EXPECT_EQ(attention, layers);
    EXPECT_EQ(norms, 2 * layers + 1);
    EXPECT_EQ(linears, 7 * layers + 1);
  }
  EXPECT_GE(models, 1);
}

} // namespace

// Found by sq-fuzz-onnx (test/fuzz/regressions/onnx/reshape-overflow.onnx):
// a constant Reshape to [60, 2^62] multiplied the element count past int64
// (signed overflow) before comparing it with the input's.
TEST(ConcreteReshape, ElementCountOverflowIsAnError) {
  std::vector<int64_t> result;
  std::string error;
  EXPECT_FALSE(
      resolveReshape({60}, {60, int64_t(1) << 62}, false, result, error));
  EXPECT_EQ(error, "reshape target has more elements than int64 can count");
  EXPECT_FALSE(
      resolveReshape({int64_t(1) << 62, 4}, {-1}, false, result, error));
  EXPECT_EQ(error, "reshape input has more elements than int64 can count");
  EXPECT_TRUE(resolveReshape({6, 4}, {-1, 8}, false, result, error));
  EXPECT_EQ(result, (std::vector<int64_t>{3, 8}));
}

// Found by scripts/test.sh --asan (UBSan, test/errors/sq-translate.test's
// absurd-dims.onnx): the raiser multiplied a weight's declared dims, here
// 2^40 x 2^40, past int64 (signed overflow) before readTensor refused them.
TEST(ImportErrors, AbsurdWeightDimsAreAnErrorNotOverflow) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  onnx::GraphProto *g = m.mutable_graph();
  g->set_name("g");
  onnx::TensorProto *table = g->add_initializer();
  table->set_name("embed_tokens.weight");
  table->set_data_type(onnx::TensorProto::FLOAT);
  table->add_dims(int64_t(1) << 40);
  table->add_dims(int64_t(1) << 40);
  table->set_raw_data(std::string(16, '\0'));
  auto valueInfo = [](onnx::ValueInfoProto *v, const char *name, int elem,
                      std::vector<std::string> dims) {
    v->set_name(name);
    auto *t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    for (const std::string &d : dims) {
      auto *dim = t->mutable_shape()->add_dim();
      if (d[0] >= '0' && d[0] <= '9')
        dim->set_dim_value(std::stoll(d));
      else
        dim->set_dim_param(d);
    }
  };
  valueInfo(g->add_input(), "input_ids", onnx::TensorProto::INT64,
            {"batch", "seq"});
  valueInfo(g->add_output(), "h", onnx::TensorProto::FLOAT,
            {"batch", "seq", "16"});
  onnx::NodeProto *gather = g->add_node();
  gather->set_op_type("Gather");
  gather->set_name("/embed_tokens/Gather");
  gather->add_input("embed_tokens.weight");
  gather->add_input("input_ids");
  gather->add_output("h");

  llvm::SmallString<256> path;
  ASSERT_FALSE(llvm::sys::fs::createTemporaryFile("sq-absurd", "onnx", path));
  {
    std::ofstream os(std::string(path), std::ios::binary);
    ASSERT_TRUE(m.SerializeToOstream(&os));
  }
  mlir::MLIRContext context;
  std::string err;
  auto module = importOnnxModel(path, &context, err);
  llvm::sys::fs::remove(path);
  EXPECT_FALSE(module);
  EXPECT_NE(err.find("absurdly large"), std::string::npos) << err;
}

// Found by sq-fuzz-onnx (test/fuzz/regressions/onnx/): a shape constant of
// 1e19 converted to int64 (undefined), and a Concat of scalars wrote the
// axis entry of an empty shape.
TEST(ConcreteEval, HostileConstantsAreErrorsNotUB) {
  CTensor big = CTensor::scalar(1e19, CTensor::Float);
  big.data.push_back(-1e19);
  big.data.push_back(std::nan(""));
  big.data.push_back(-7.0);
  std::vector<int64_t> ints = big.asInts();
  EXPECT_EQ(ints, (std::vector<int64_t>{INT64_MAX, INT64_MIN, INT64_MIN, -7}));
  // Scalars read the same way (a Slice axis of 1e19 was an undefined
  // conversion in the raiser; found by the CI fuzz run), and a missing
  // element is INT64_MIN, not a read past the end.
  EXPECT_EQ(big.intAt(0), INT64_MAX);
  EXPECT_EQ(big.intAt(3), -7);
  EXPECT_EQ(big.intAt(4), INT64_MIN);
  EXPECT_EQ(CTensor().intAt(0), INT64_MIN);

  std::vector<CTensor> out;
  std::string error;
  ConcreteAttrs attrs;
  EXPECT_FALSE(evalConcrete(
      "Concat",
      {CTensor::scalar(1, CTensor::Int), CTensor::scalar(2, CTensor::Int)},
      attrs, out, error));
  EXPECT_EQ(error, "Concat of scalars (rank 0)");

  // An empty start tensor for Range (was std::vector::at throwing, which
  // aborts without exceptions).
  CTensor empty;
  empty.shape = {0};
  EXPECT_FALSE(evalConcrete("Range",
                            {empty, CTensor::scalar(4, CTensor::Int),
                             CTensor::scalar(1, CTensor::Int)},
                            attrs, out, error));
  EXPECT_EQ(error, "Range needs scalar start, limit and delta");
  // A range whose count is hugely negative is empty (converting the count
  // to int64 was undefined; found by sq-fuzz-onnx, seed 7).
  ASSERT_TRUE(evalConcrete("Range",
                           {CTensor::scalar(7.6e31, CTensor::Float),
                            CTensor::scalar(0, CTensor::Float),
                            CTensor::scalar(1, CTensor::Float)},
                           attrs, out, error))
      << error;
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{0}));

  // Unsqueeze with a repeated axis (ONNX requires unique axes) inserted past
  // the end of its shape; found by a 4-minute sq-fuzz-onnx run. Negative axes
  // count from the output's end, so -1 and 2 name the same axis of a rank-3
  // output.
  CTensor v = CTensor::vector({3, 4});
  attrs.axes = {0, 0};
  EXPECT_FALSE(evalConcrete("Unsqueeze", {v}, attrs, out, error));
  EXPECT_EQ(error, "Unsqueeze axis 0 given twice");
  attrs.axes = {-1, 2};
  EXPECT_FALSE(evalConcrete("Unsqueeze", {v}, attrs, out, error));
  EXPECT_EQ(error, "Unsqueeze axis 2 given twice");
  // Transpose's perm must be a permutation (an entry of 102 read past the
  // shape; found by sq-fuzz-onnx, seed 5, after 37,523 execs).
  ConcreteAttrs tattrs;
  tattrs.hasPerm = true;
  CTensor m = CTensor::vector({1, 2, 3, 4, 5, 6});
  m.shape = {2, 3};
  for (std::vector<int64_t> perm :
       {std::vector<int64_t>{0, 102}, std::vector<int64_t>{-1, 0},
        std::vector<int64_t>{1, 1}}) {
    tattrs.perm = perm;
    EXPECT_FALSE(evalConcrete("Transpose", {m}, tattrs, out, error));
    EXPECT_EQ(error.rfind("Transpose perm is not a permutation of 0..1", 0), 0u)
        << error;
  }
  tattrs.perm = {1, 0};
  ASSERT_TRUE(evalConcrete("Transpose", {m}, tattrs, out, error)) << error;
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(out[0].data, (std::vector<double>{1, 4, 2, 5, 3, 6}));

  attrs.axes = {-1, 0};
  ASSERT_TRUE(evalConcrete("Unsqueeze", {v}, attrs, out, error)) << error;
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{1, 2, 1}));
}

// evalConcrete dispatches through a table filled by family
// (ConcreteElementwise.cpp, ConcreteShape.cpp, ConcreteGenerators.cpp): one
// op of each family, the arity check the table does for every op, and the
// message for an op no family registers (Raise.cpp rewrites it for users).
TEST(ConcreteEval, TableDispatchesEveryFamily) {
  std::vector<CTensor> out;
  std::string error;
  ConcreteAttrs attrs;
  CTensor v = CTensor::vector({1, 2, 3});

  // Elementwise: integer Div truncates, Float Div does not, Equal is Bool.
  ASSERT_TRUE(evalConcrete("Div", {v, CTensor::scalar(2, CTensor::Int)}, attrs,
                           out, error))
      << error;
  EXPECT_EQ(out[0].data, (std::vector<double>{0, 1, 1}));
  EXPECT_EQ(out[0].kind, CTensor::Int);
  ASSERT_TRUE(evalConcrete("Div", {v, CTensor::scalar(2, CTensor::Float)},
                           attrs, out, error))
      << error;
  EXPECT_EQ(out[0].data, (std::vector<double>{0.5, 1, 1.5}));
  ASSERT_TRUE(evalConcrete("Equal", {v, CTensor::scalar(2, CTensor::Int)},
                           attrs, out, error))
      << error;
  EXPECT_EQ(out[0].kind, CTensor::Bool);
  EXPECT_EQ(out[0].data, (std::vector<double>{0, 1, 0}));
  ASSERT_TRUE(evalConcrete("Neg", {v}, attrs, out, error)) << error;
  EXPECT_EQ(out[0].kind, CTensor::Int);
  EXPECT_EQ(out[0].data, (std::vector<double>{-1, -2, -3}));

  // Shape family: Shape with start/end (opset 15).
  CTensor m = CTensor::vector({1, 2, 3, 4, 5, 6});
  m.shape = {1, 2, 3};
  ConcreteAttrs shapeAttrs;
  shapeAttrs.hasStart = true;
  shapeAttrs.start = -2;
  ASSERT_TRUE(evalConcrete("Shape", {m}, shapeAttrs, out, error)) << error;
  EXPECT_EQ(out[0].data, (std::vector<double>{2, 3}));

  // Generators: the lower triangle of a 2x2 mask, and ReduceMax.
  CTensor ones = CTensor::vector({1, 1, 1, 1});
  ones.shape = {2, 2};
  ConcreteAttrs lower;
  lower.upper = 0;
  ASSERT_TRUE(evalConcrete("Trilu", {ones}, lower, out, error)) << error;
  EXPECT_EQ(out[0].data, (std::vector<double>{1, 0, 1, 1}));
  ConcreteAttrs keep;
  keep.axes = {-1};
  ASSERT_TRUE(evalConcrete("ReduceMax", {m}, keep, out, error)) << error;
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{1, 2, 1}));
  EXPECT_EQ(out[0].data, (std::vector<double>{3, 6}));

  // Arity: checked from the table before the op runs.
  EXPECT_FALSE(evalConcrete("Where", {v, v}, attrs, out, error));
  EXPECT_EQ(error, "Where needs 3 inputs");
  EXPECT_FALSE(evalConcrete("Reshape", {v}, attrs, out, error));
  EXPECT_EQ(error, "Reshape needs 2 inputs");
  EXPECT_FALSE(evalConcrete("Cos", {}, attrs, out, error));
  EXPECT_EQ(error, "Cos needs 1 inputs");

  EXPECT_FALSE(evalConcrete("Softmax", {v}, attrs, out, error));
  EXPECT_EQ(error, "op 'Softmax' is not evaluated on constants");
}

namespace {

bool handledA(Raiser &, OpCall &) { return true; }
bool handledB(Raiser &, OpCall &) { return true; }
bool handledC(Raiser &, OpCall &) { return true; }

} // namespace

// The raiser's op table (OpTable.cpp): a node's own domain first ("ai.onnx"
// is ""), every domain's handlers when its own has none, PreFold before
// Pattern before Fallback whatever the registration order.
TEST(OpTable, DomainsStagesAndArity) {
  using Handlers = std::vector<std::pair<OpTable::Stage, OpHandler>>;
  OpTable t;
  t.add("", "Mul", handledC, OpTable::Fallback);
  t.add("", "Mul", handledA);
  t.add("ai.onnx", "Mul", handledB);
  t.add("com.microsoft", "Rotary", handledC, OpTable::Fallback);
  t.add("", "Rotary", handledA);
  t.add("", "Shape", handledB, OpTable::PreFold);
  t.requireInputs("Mul", 2);

  Handlers mul = {{OpTable::Pattern, handledA},
                  {OpTable::Pattern, handledB},
                  {OpTable::Fallback, handledC}};
  EXPECT_EQ(t.lookup("", "Mul"), mul);
  EXPECT_EQ(t.lookup("ai.onnx", "Mul"), mul);
  EXPECT_EQ(t.lookup("com.microsoft", "Mul"), mul);
  EXPECT_EQ(t.lookup("com.microsoft", "Rotary"),
            (Handlers{{OpTable::Fallback, handledC}}));
  EXPECT_EQ(t.lookup("ai.onnx", "Rotary"),
            (Handlers{{OpTable::Pattern, handledA}}));
  EXPECT_EQ(
      t.lookup("org.other", "Rotary"),
      (Handlers{{OpTable::Pattern, handledA}, {OpTable::Fallback, handledC}}));
  EXPECT_EQ(t.lookup("", "Shape"), (Handlers{{OpTable::PreFold, handledB}}));
  EXPECT_TRUE(t.lookup("", "Gemm").empty());
  EXPECT_EQ(t.requiredInputs("Mul"), 2u);
  EXPECT_EQ(t.requiredInputs("Add"), 0u);

  // The importer's table: every op of the fixtures has a handler, binary ops
  // check their second operand.
  const OpTable &table = opTable();
  for (const char *op : {"Constant",
                         "Shape",
                         "Identity",
                         "Cast",
                         "Transpose",
                         "Reshape",
                         "Unsqueeze",
                         "Squeeze",
                         "Expand",
                         "Tile",
                         "Gather",
                         "MatMul",
                         "Add",
                         "Mul",
                         "Div",
                         "Sub",
                         "Split",
                         "Slice",
                         "Neg",
                         "Concat",
                         "Pow",
                         "ReduceMean",
                         "Sqrt",
                         "Reciprocal",
                         "Sigmoid",
                         "Softmax",
                         "Where",
                         "SimplifiedLayerNormalization",
                         "RMSNormalization",
                         "LayerNormalization",
                         "Attention",
                         "RotaryEmbedding"})
    EXPECT_FALSE(table.lookup("", op).empty()) << op;
  for (const char *op : {"SkipSimplifiedLayerNormalization", "RotaryEmbedding",
                         "GroupQueryAttention", "MultiHeadAttention"})
    EXPECT_FALSE(table.lookup("com.microsoft", op).empty()) << op;
  for (const char *op : {"MatMul", "Mul", "Add", "Div"})
    EXPECT_EQ(table.requiredInputs(op), 2u) << op;
}

namespace {

/// Imports `model` (written to a temporary file); "" with `err` set on
/// failure, else @forward printed.
std::string importForward(const onnx::ModelProto &model, std::string &err) {
  llvm::SmallString<256> path;
  if (llvm::sys::fs::createTemporaryFile("sq-domains", "onnx", path))
    return "";
  {
    std::ofstream os(std::string(path), std::ios::binary);
    model.SerializeToOstream(&os);
  }
  mlir::MLIRContext context;
  auto module = importOnnxModel(path, &context, err);
  llvm::sys::fs::remove(path);
  if (!module)
    return "";
  std::string text;
  llvm::raw_string_ostream os(text);
  module->lookupSymbol<mlir::func::FuncOp>("forward").print(os);
  return text;
}

onnx::ModelProto loadFixture(const char *name) {
  onnx::ModelProto model;
  std::ifstream is(std::string(SQ_SOURCE_DIR) + "/test/Import/Inputs/" + name,
                   std::ios::binary);
  EXPECT_TRUE(model.ParseFromIstream(&is)) << name;
  return model;
}

} // namespace

// How a node's domain picks its handler, as before the op table: the
// com.microsoft ops are understood in any domain; ONNX's RotaryEmbedding
// takes its (X, cos, sin, position_ids) order in "" and "ai.onnx";
// ONNX's Attention only in "" (not "ai.onnx", nor com.microsoft's).
TEST(ImportDomains, AsBeforeTheOpTable) {
  std::string err;
  onnx::ModelProto genai = loadFixture("genai-gqa-fp16.onnx");
  std::string expected = importForward(genai, err);
  ASSERT_FALSE(expected.empty()) << err;
  for (auto &node : *genai.mutable_graph()->mutable_node())
    if (node.domain() == "com.microsoft")
      node.set_domain("");
  EXPECT_EQ(importForward(genai, err), expected) << err;

  onnx::ModelProto onnx23 = loadFixture("onnx23-attention.onnx");
  expected = importForward(onnx23, err);
  ASSERT_FALSE(expected.empty()) << err;
  onnx::ModelProto rotary = onnx23;
  for (auto &node : *rotary.mutable_graph()->mutable_node())
    if (node.op_type() == "RotaryEmbedding")
      node.set_domain("ai.onnx");
  EXPECT_EQ(importForward(rotary, err), expected) << err;

  for (const char *domain : {"ai.onnx", "com.microsoft"}) {
    onnx::ModelProto attention = onnx23;
    for (auto &node : *attention.mutable_graph()->mutable_node())
      if (node.op_type() == "Attention")
        node.set_domain(domain);
    EXPECT_EQ(importForward(attention, err), "");
    EXPECT_NE(err.find("(Attention, #"), std::string::npos) << err;
    EXPECT_NE(err.find("unsupported op 'Attention' on an activation"),
              std::string::npos)
        << err;
  }
}
