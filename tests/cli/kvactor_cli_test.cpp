// The `kvactor` program end to end: its output on the embedded default model
// against HF transformers' greedy continuations, and one clear error with a
// non-zero exit (never a crash) for each kind of damaged model directory.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <boost/json.hpp>

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

struct run_result {
  int exit_code = -1; // -1: killed by a signal
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void spit(const fs::path& p, const std::string& data) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << data;
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

run_result run(const std::string& args, const std::string& stdin_text = "") {
  static int n = 0;
  const fs::path tmp = fs::temp_directory_path() / ("kvactor_cli_test_" + std::to_string(getpid()));
  fs::create_directories(tmp);
  const auto in = tmp / ("in" + std::to_string(n)), err = tmp / ("err" + std::to_string(n++));
  spit(in, stdin_text);
  const std::string cmd = std::string(KVACTOR_CLI) + " " + args + " <" + in.string() + " 2>" + err.string();
  run_result r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  for (size_t k; (k = fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, k);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = slurp(err);
  return r;
}

const fs::path default_model = fs::path(KVACTOR_SOURCE_DIR) / "models" / "default";

// A copy of the default model to damage.
fs::path model_copy(const std::string& name) {
  const auto dir = fs::temp_directory_path() / ("kvactor_cli_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::copy(default_model, dir);
  return dir;
}

// Rewrites a safetensors header through `edit`, keeping the data section.
template <class F>
void edit_safetensors_header(const fs::path& file, F edit) {
  const std::string data = slurp(file);
  uint64_t n = 0;
  std::memcpy(&n, data.data(), 8);
  json::object header = json::parse(data.substr(8, n)).as_object();
  edit(header);
  const std::string h = json::serialize(header);
  const uint64_t m = h.size();
  std::string out(reinterpret_cast<const char*>(&m), 8);
  spit(file, out + h + data.substr(8 + n));
}

void expect_clean_failure(const run_result& r, const std::string& file, const std::string& phrase) {
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find(file) != std::string::npos);
  CHECK(r.err.find(phrase) != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1); // one error line
}

} // namespace

TEST_CASE("generate reproduces HF transformers' greedy continuations of the default model") {
  const auto ref = json::parse(slurp(fs::path(KVACTOR_TEST_DATA) / "models" / "default_reference.json")).as_array();
  int checked = 0;
  for (const auto& c : ref) {
    // Only where HF's own top-1/top-2 margin leaves no doubt about the argmax.
    if (c.at("min_margin").to_number<double>() < 0.05) continue;
    const auto r = run("generate --prompt " + quote(std::string(c.at("prompt").as_string())) +
                       " --max-tokens 32 --temperature 0 --ignore-eos");
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out == std::string(c.at("text").as_string()) + "\n");
    CHECK(r.err.find("prompt tokens: " + std::to_string(c.at("ids").as_array().size()) +
                     ", completion tokens: 32") != std::string::npos);
    CHECK(r.err.find("tokens/s") != std::string::npos);
    ++checked;
  }
  CHECK(checked >= 2);
}

TEST_CASE("chunked prefill on the command line gives the same text") {
  const std::string args = "generate --prompt 'Integer literals are' --max-tokens 24 --temperature 0 --ignore-eos";
  const auto whole = run(args), chunked = run(args + " --chunk 1");
  REQUIRE(whole.exit_code == 0);
  CHECK(chunked.out == whole.out);
}

TEST_CASE("sampling is reproducible from the seed") {
  const std::string args = "generate --prompt 'The' --max-tokens 24 --temperature 0.9 --top-p 0.95 --ignore-eos";
  const auto a = run(args + " --seed 7"), b = run(args + " --seed 7"), c = run(args + " --seed 8");
  REQUIRE(a.exit_code == 0);
  CHECK(a.out == b.out);
  CHECK(a.out != c.out);
}

TEST_CASE("tokenize and detokenize agree with HF tokenizers") {
  const auto r = run("tokenize --add-special --text 'The \"with\" statement'");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "[0,467,270,939,3,471]\n");
  const auto d = run("detokenize --skip-special", "[0,467,270,939,3,471]");
  REQUIRE(d.exit_code == 0);
  CHECK(d.out == "The \"with\" statement\n");
  const auto s = run("tokenize", "from stdin");
  CHECK(s.exit_code == 0);
  CHECK(s.out.front() == '[');
  expect_clean_failure(run("detokenize", "[1, 99999]"), "99999", "not in the vocabulary");
}

TEST_CASE("kv-budget prints the design notes' formula") {
  const auto r = run("kv-budget --model " + (fs::path(KVACTOR_SOURCE_DIR) / "tools/shapes/llama3-70b").string() +
                     " --seq 4096 --batch 1");
  REQUIRE(r.exit_code == 0);
  // 80 layers x 8 kv heads x 128 x 2 x 2 bytes x 4096 tokens
  CHECK(r.out.find("per sequence: 1342177280 bytes (1.34 GB)") != std::string::npos);
  const auto fp8 = run("kv-budget --model " + (fs::path(KVACTOR_SOURCE_DIR) / "tools/shapes/llama3-70b").string() +
                       " --seq 4096 --batch 8 --kv-dtype fp8");
  CHECK(fp8.out.find("total:        5368709120 bytes") != std::string::npos);
}

namespace {

uint32_t be32(const std::string& s, size_t at) {
  return uint32_t(uint8_t(s[at])) << 24 | uint32_t(uint8_t(s[at + 1])) << 16 | uint32_t(uint8_t(s[at + 2])) << 8 |
         uint32_t(uint8_t(s[at + 3]));
}

uint32_t crc32(const std::string& s, size_t at, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = at; i < at + n; ++i) {
    c ^= uint8_t(s[i]);
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
  }
  return ~c;
}

struct png_image {
  uint32_t width = 0, height = 0;
  std::string pixels; // per row: a filter byte, then one palette index a pixel
};

// Checks every chunk's CRC, the IHDR, and inflates the IDAT's stored blocks.
png_image read_stored_png(const std::string& png) {
  REQUIRE(png.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
  png_image img;
  std::string zlib;
  size_t at = 8;
  while (at + 12 <= png.size()) {
    const uint32_t n = be32(png, at);
    const std::string type = png.substr(at + 4, 4);
    REQUIRE(at + 12 + n <= png.size());
    CHECK_MESSAGE(be32(png, at + 8 + n) == crc32(png, at + 4, n + 4), "chunk ", type);
    if (type == "IHDR") {
      img.width = be32(png, at + 8);
      img.height = be32(png, at + 12);
      CHECK(png.substr(at + 16, 5) == std::string("\x08\x03\x00\x00\x00", 5)); // 8-bit palette
    }
    if (type == "IDAT") zlib += png.substr(at + 8, n);
    at += 12 + n;
  }
  CHECK(at == png.size());
  REQUIRE(zlib.size() > 6);
  CHECK((uint8_t(zlib[0]) * 256 + uint8_t(zlib[1])) % 31 == 0);
  size_t z = 2;
  for (bool last = false; !last;) {
    REQUIRE(z + 5 <= zlib.size());
    last = zlib[z] & 1;
    REQUIRE((zlib[z] & 6) == 0); // stored
    const size_t len = uint8_t(zlib[z + 1]) | uint8_t(zlib[z + 2]) << 8;
    REQUIRE((len ^ (uint8_t(zlib[z + 3]) | uint8_t(zlib[z + 4]) << 8)) == 0xffff);
    img.pixels += zlib.substr(z + 5, len);
    z += 5 + len;
  }
  uint32_t a = 1, b = 0;
  for (char c : img.pixels) {
    a = (a + uint8_t(c)) % 65521;
    b = (b + a) % 65521;
  }
  CHECK(be32(zlib, z) == (b << 16 | a));
  return img;
}

} // namespace

TEST_CASE("profile: the formula, whole pages, measured memory, and a valid PNG plot") {
  const auto png = fs::temp_directory_path() / ("kvactor_cli_profile_" + std::to_string(getpid()) + ".png");
  const auto r = run("profile --seq-lens 64,256 --kv-dtype int8 --threads 1 --png " + png.string());
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  // The default model: 4 layers x 2 kv heads x 32 x 2 x 1 byte = 512 bytes a
  // token, plus 4 x 2 x 2 fp32 scales = 64 bytes.
  CHECK(r.out.find("KV bytes = batch x seq x layers x kv_heads x head_dim x 2 x 1 byte (+ fp32 scales per token") !=
        std::string::npos);
  CHECK(r.out.find("      64        4       32.77 KB      4.10 KB       36.86 KB") != std::string::npos);
  CHECK(r.out.find("     256       16      131.07 KB     16.38 KB      147.46 KB") != std::string::npos);
  const png_image img = read_stored_png(slurp(png));
  CHECK(img.width == 900);
  CHECK(img.height == 560);
  REQUIRE(img.pixels.size() == size_t(img.height) * (1 + img.width));
  size_t inked = 0;
  for (size_t row = 0; row < img.height; ++row) {
    CHECK(img.pixels[row * (1 + img.width)] == 0); // filter: none
    for (size_t i = 1; i <= img.width; ++i) inked += img.pixels[row * (1 + img.width) + i] != 0; // 0: white
  }
  CHECK(inked > 5000);
  fs::remove(png);
  MESSAGE(r.out);

  auto bad = run("profile");
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("profile needs --seq-lens") != std::string::npos);
  bad = run("profile --seq-lens 512,x");
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--seq-lens: 'x' is not a positive length") != std::string::npos);
  bad = run("profile --seq-lens 8");
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.find("leaves nothing to prefill") != std::string::npos);
}

TEST_CASE("each damaged model directory gives one clear error and a non-zero exit") {
  const std::string gen = "generate --prompt hi --max-tokens 1 --model ";

  SUBCASE("truncated safetensors") {
    const auto dir = model_copy("truncated");
    const auto f = dir / "model.safetensors";
    spit(f, slurp(f).substr(0, 100000));
    expect_clean_failure(run(gen + dir.string()), f.string(), "past the end of the data section");
  }
  SUBCASE("header lying about sizes") {
    const auto dir = model_copy("lying");
    const auto f = dir / "model.safetensors";
    edit_safetensors_header(f, [](json::object& h) {
      h["model.norm.weight"].as_object()["shape"] = json::array{193};
    });
    expect_clean_failure(run(gen + dir.string()), f.string(), "model.norm.weight");
  }
  SUBCASE("missing tensor") {
    const auto dir = model_copy("missing");
    const auto f = dir / "model.safetensors";
    edit_safetensors_header(f, [](json::object& h) { h.erase("model.layers.2.mlp.up_proj.weight"); });
    expect_clean_failure(run(gen + dir.string()), f.string(), "model.layers.2.mlp.up_proj.weight");
  }
  SUBCASE("wrong shape") {
    const auto dir = model_copy("shape");
    const auto f = dir / "model.safetensors";
    edit_safetensors_header(f, [](json::object& h) {
      h["model.norm.weight"].as_object()["shape"] = json::array{2, 96}; // same size, wrong shape
    });
    expect_clean_failure(run(gen + dir.string()), f.string(), "expected shape [192]");
  }
  SUBCASE("unknown dtype") {
    const auto dir = model_copy("dtype");
    const auto f = dir / "model.safetensors";
    edit_safetensors_header(f, [](json::object& h) { h["model.norm.weight"].as_object()["dtype"] = "Q4_K"; });
    expect_clean_failure(run(gen + dir.string()), f.string(), "Q4_K");
  }
  SUBCASE("unknown architecture") {
    const auto dir = model_copy("arch");
    auto cfg = json::parse(slurp(dir / "config.json")).as_object();
    cfg["architectures"] = json::array{"GPT2LMHeadModel"};
    spit(dir / "config.json", json::serialize(cfg));
    expect_clean_failure(run(gen + dir.string()), (dir / "config.json").string(),
                         "unsupported architecture 'GPT2LMHeadModel'");
  }
  SUBCASE("malformed config.json") {
    const auto dir = model_copy("config");
    spit(dir / "config.json", slurp(dir / "config.json").substr(0, 300));
    expect_clean_failure(run(gen + dir.string()), (dir / "config.json").string(), "JSON");
  }
  SUBCASE("malformed tokenizer.json") {
    const auto dir = model_copy("tokenizer");
    spit(dir / "tokenizer.json", slurp(dir / "tokenizer.json").substr(0, 3000));
    expect_clean_failure(run(gen + dir.string()), (dir / "tokenizer.json").string(), "JSON");
  }
  SUBCASE("no model directory") {
    expect_clean_failure(run(gen + "/nonexistent/model"), "/nonexistent/model/config.json", "");
  }
}

TEST_CASE("usage errors exit with 2 and say what is wrong") {
  auto r = run("generate --prompt hi --bogus 1");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("unknown option --bogus") != std::string::npos);
  r = run("generate --prompt hi --temperature warm");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--temperature: 'warm' is not a valid number") != std::string::npos);
  r = run("frobnicate");
  CHECK(r.exit_code == 2);
  r = run("generate --prompt hi --max-tokens 5000");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("context") != std::string::npos);
}
