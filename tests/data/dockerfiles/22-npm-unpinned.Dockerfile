FROM node:20-slim
RUN npm install express
USER 1000
