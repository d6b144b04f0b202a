#pragma once
// A run's results for machines (JSON, docs/bench.md lists every field) and
// for people (a table on stdout); the same for a sweep of runs.
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "tools/bench/bench_run.h"

namespace kvactor::bench {

// `per_request`: add one entry for each request (the smoke test reads them).
boost::json::object report_json(const run_report& report, bool per_request = true);
std::string report_table(const run_report& report);

// The sweep's axis: "rate" or "concurrency".
boost::json::object sweep_json(const std::vector<run_report>& points, const std::string& axis);
std::string sweep_table(const std::vector<run_report>& points, const std::string& axis);

// Writes `doc` and a newline; throws kvactor::load_error naming the path when it cannot.
void write_json(const std::string& path, const boost::json::object& doc);

} // namespace kvactor::bench
