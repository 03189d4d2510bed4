from twisted.application.service import ServiceMaker

lbtwist = ServiceMaker("lbtwist", "lbtwist.tap", "An HTTP load balancer and reverse proxy.", "lbtwist")
