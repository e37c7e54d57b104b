// cAdvisor for the peer benchmark: the container manager and Prometheus collectors of
// github.com/google/cadvisor/lib, wired as cAdvisor's own cmd/cadvisor.go and its
// RegisterPrometheusHandler wire them. Since v0.60 that main is in the nested module
// github.com/google/cadvisor/cmd, which the Go module proxy does not serve, while the library
// (manager, raw cgroup factory, metrics) is served at the same version. What is left out is the
// web UI, the REST API and the container runtimes (docker, containerd, crio, podman): the bench
// cgroups are raw cgroups, which the raw factory handles in both.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/cadvisor/lib/cache/memory"
	"github.com/google/cadvisor/lib/container"
	"github.com/google/cadvisor/lib/manager"
	"github.com/google/cadvisor/lib/metrics"
	info "github.com/google/cadvisor/lib/model"
	"github.com/google/cadvisor/lib/utils/sysfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

var (
	listenIP        = flag.String("listen_ip", "127.0.0.1", "IP to listen on")
	port            = flag.Int("port", 8080, "port to listen on")
	storageDuration = flag.Duration("storage_duration", 2*time.Minute, "how long to keep data stored (cAdvisor's default)")
	rawPrefixes     = flag.String("raw_cgroup_prefix_whitelist", "", "comma-separated cgroup path prefixes collected even with -docker_only")
	envAllowList    = flag.String("env_metadata_whitelist", "", "environment variables collected for containers")
	// cAdvisor's defaults: everything but these.
	ignoreMetrics = container.MetricSet{
		container.MemoryNumaMetrics: {}, container.NetworkTcpUsageMetrics: {},
		container.NetworkUdpUsageMetrics: {}, container.NetworkAdvancedTcpUsageMetrics: {},
		container.ProcessSchedulerMetrics: {}, container.ProcessMetrics: {},
		container.HugetlbUsageMetrics: {}, container.ReferencedMemoryMetrics: {},
		container.CPUTopologyMetrics: {}, container.ResctrlMetrics: {}, container.CPUSetMetrics: {},
	}
	enableMetrics = container.MetricSet{}
)

func main() {
	flag.Var(&ignoreMetrics, "disable_metrics", "comma-separated metrics to disable: "+container.AllMetrics.String())
	flag.Var(&enableMetrics, "enable_metrics", "comma-separated metrics to enable (overrides -disable_metrics): "+container.AllMetrics.String())
	klog.InitFlags(nil)
	flag.Parse()
	included := container.AllMetrics.Difference(ignoreMetrics)
	if len(enableMetrics) > 0 {
		included = enableMetrics
	}
	klog.Infof("enabled metrics: %s", included.String())

	m, err := manager.New(memory.New(*storageDuration, nil), sysfs.NewRealSysFs(), manager.HousekeepingConfigFlags,
		included, strings.Split(*rawPrefixes, ","), strings.Split(*envAllowList, ","), "", 0)
	if err != nil {
		klog.Fatalf("manager: %v", err)
	}
	// As cmd/internal/http.RegisterPrometheusHandler: a registry per scrape with the container
	// collector (latest sample, every subcontainer), the machine collector, Go and process metrics.
	machine := metrics.NewPrometheusMachineCollector(m, included)
	goCollector := collectors.NewGoCollector()
	process := collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, req *http.Request) {
		opts := info.RequestOptions{IdType: "name", Count: 1, Recursive: true}
		r := prometheus.NewRegistry()
		r.MustRegister(metrics.NewPrometheusCollector(m, metrics.DefaultContainerLabels, included, clock.RealClock{}, opts),
			machine, goCollector, process)
		promhttp.HandlerFor(r, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, req)
	})
	if err := m.Start(); err != nil {
		klog.Fatalf("start: %v", err)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		_ = m.Stop()
		os.Exit(0)
	}()
	klog.Fatal(http.ListenAndServe(fmt.Sprintf("%s:%d", *listenIP, *port), mux))
}
